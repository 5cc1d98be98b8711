# Every certificate row has its DER (after 0008 removed rows without one).

import django.db.models.functions.text
import django.db.models.lookups
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("ca", "0008_reserve_existing_serials")]

    operations = [
        migrations.AddConstraint(
            model_name='certificate',
            constraint=models.CheckConstraint(condition=django.db.models.lookups.GreaterThan(django.db.models.functions.text.Length('der'), 0), name='certificate_has_der'),
        ),
    ]
