"""Everything the services say to the database: the tables, and one module of statements per table
group, each named for what it holds. Services own the transactions; the statements run on the
connection a service passes them."""
