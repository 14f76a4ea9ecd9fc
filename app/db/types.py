"""Column types that behave the same on SQLite and PostgreSQL."""

from sqlalchemy import BigInteger, Integer

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for ledgers.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

# The largest value a BIGINT column holds (SQLite's INTEGER too): larger numbers are refused
# at the edge instead of overflowing in the driver.
BIGINT_MAX = 2**63 - 1
