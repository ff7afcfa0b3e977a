"""Whole-system scenarios: several real processes (workers, `pipeline serve`, the emulator,
an embedded Redis that restarts, a PostgreSQL that goes away), chaos, and end to end runs.
Most are marked slow; each asserts invariants (nothing lost, nothing paid twice, the ledger
equal to the bill) under deadlines scaled for a busy machine, never rates.

Nothing here is shared by these tests alone: they are built from tests/support/ (`workers`,
`paid_workers`, `emulator`, `api`, `backends`, `cli`) and tests/conftest.py (`client`).
"""
