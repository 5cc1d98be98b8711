"""Every key already revoked for key compromise joins the blocked-key table."""

from django.db import migrations


def backfill(apps, schema_editor):
    Revocation = apps.get_model("ca", "Revocation")
    BlockedKey = apps.get_model("ca", "BlockedKey")
    seen = set(BlockedKey.objects.values_list("spki_sha256", flat=True))
    rows = []
    for revocation in (
        Revocation.objects.filter(reason="key_compromise").select_related("certificate").order_by("revoked_at")
    ):
        spki = revocation.certificate.spki_sha256
        if spki in seen:
            continue
        seen.add(spki)
        rows.append(
            BlockedKey(
                spki_sha256=spki,
                source="key_compromise",
                certificate=revocation.certificate,
                created_at=revocation.revoked_at,
            )
        )
    BlockedKey.objects.bulk_create(rows)


class Migration(migrations.Migration):
    dependencies = [("ca", "0004_blocked_key")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
