"""The audit log becomes a hash chain: sequence numbers and SHA-256 links, existing entries chained in order.

Existing entries are chained in the order they were written (primary key), with the same canonical
serialisation (version 1) that :mod:`ca.audit` uses for new entries, so ``verify_audit`` checks them alike.
"""

from django.db import migrations, models


def chain_existing(apps, schema_editor):
    from ca.audit import GENESIS_HASH, HASHED_FIELDS, entry_hash

    AuditEntry = apps.get_model("ca", "AuditEntry")
    previous = GENESIS_HASH
    batch = []
    stored = ["id", *(f for f in HASHED_FIELDS if f not in ("sequence", "hash_version", "prev_hash"))]
    rows = AuditEntry.objects.order_by("pk").values(*stored).iterator(chunk_size=2000)
    for sequence, values in enumerate(rows, start=1):
        values["sequence"] = sequence
        values["hash_version"] = 1
        values["prev_hash"] = previous
        previous = entry_hash(values)
        batch.append(
            AuditEntry(
                pk=values["id"],
                sequence=sequence,
                hash_version=1,
                prev_hash=values["prev_hash"],
                entry_hash=previous,
            )
        )
        if len(batch) >= 2000:
            AuditEntry.objects.bulk_update(batch, ["sequence", "hash_version", "prev_hash", "entry_hash"])
            batch = []
    AuditEntry.objects.bulk_update(batch, ["sequence", "hash_version", "prev_hash", "entry_hash"])


class Migration(migrations.Migration):
    dependencies = [("ca", "0005_blocked_key_backfill")]

    operations = [
        migrations.AlterModelOptions(
            name="auditentry",
            options={"ordering": ["-sequence"], "verbose_name_plural": "audit entries"},
        ),
        migrations.AddField(
            model_name="auditentry",
            name="sequence",
            field=models.PositiveBigIntegerField(null=True),
        ),
        migrations.AddField(
            model_name="auditentry",
            name="hash_version",
            field=models.PositiveSmallIntegerField(
                default=1, help_text="Which canonical serialisation entry_hash was computed over."
            ),
        ),
        migrations.AddField(
            model_name="auditentry",
            name="prev_hash",
            field=models.CharField(
                blank=True,
                default="",
                max_length=64,
                help_text="entry_hash of the previous entry (zeros for #1).",
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditentry",
            name="entry_hash",
            field=models.CharField(
                blank=True,
                default="",
                max_length=64,
                help_text="SHA-256 over this entry's fields and prev_hash.",
            ),
            preserve_default=False,
        ),
        migrations.RunPython(chain_existing, migrations.RunPython.noop, elidable=False),
        migrations.AlterField(
            model_name="auditentry",
            name="sequence",
            field=models.PositiveBigIntegerField(
                null=True,
                blank=True,
                unique=True,
                help_text="Position in the chain: 1, 2, 3, ... without gaps.",
            ),
        ),
    ]
