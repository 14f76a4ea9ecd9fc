"""Column types that behave the same on SQLite and PostgreSQL."""

from sqlalchemy import BigInteger, Integer

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for ledgers.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
