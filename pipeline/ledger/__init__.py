"""The spend ledger: every call attempt as a SQL row, budgets reserved in Redis, cost reports.

Follow one call: `budget.Budget` reserves its worst case before it goes out,
`recorder.SqlRecorder` writes a `started` row and then settles it, and `report.cost_report`
sums the rows. `db.get_engine` opens (and migrates) the database.
"""
