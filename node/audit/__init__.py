"""The audit database: schema, migrations, the group-commit writer and the queries."""
