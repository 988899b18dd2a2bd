"""Pure billing rules: no Flask, no database."""
