# Every serial already used gets its reservation; rows without DER become open reservations.

from django.db import migrations


def reserve_existing_serials(apps, schema_editor):
    """Every serial already used gets its reservation (so a new draw collides with it before signing);
    a row without DER (written before signing by the old issuance, never completed) becomes an open
    reservation, reported until it is revoked by serial, and the row goes (CHECK certificate_has_der)."""
    Certificate = apps.get_model("ca", "Certificate")
    SerialReservation = apps.get_model("ca", "SerialReservation")
    certificates = schema_editor.quote_name(Certificate._meta.db_table)
    reservations = schema_editor.quote_name(SerialReservation._meta.db_table)
    schema_editor.execute(
        f"INSERT INTO {reservations} (ca_id, serial, purpose, not_after, reserved_at, state, closed_at, note, "
        "revocation_reason) "
        "SELECT ca_id, serial, %s, not_after, created_at, %s, created_at, '', '' "
        f"FROM {certificates} WHERE LENGTH(der) > 0",
        ["issued before serial reservations", "issued"],
    )
    for row in Certificate.objects.filter(der=b"").iterator():
        SerialReservation.objects.create(
            ca_id=row.ca_id,
            serial=row.serial,
            purpose="a certificate row without DER, from before serial reservations",
            not_after=row.not_after,
            reserved_at=row.created_at,
            state="reserved",
        )
    Certificate.objects.filter(der=b"").delete()



class Migration(migrations.Migration):
    dependencies = [("ca", "0007_serial_reservation")]

    operations = [
        migrations.RunPython(reserve_existing_serials, migrations.RunPython.noop),
    ]
