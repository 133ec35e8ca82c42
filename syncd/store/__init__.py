"""The only code that touches SQLite: schema, migrations, the writer session, records."""
