"""Tests of the product's own job in tasks/: PDFs, prompts, the analysis schema, the analysis
task's failure paths, submission and resubmission of documents.

Nothing here is shared by these tests alone. What they use from other folders is in
tests/support/: `emulator`, `pdfs.make_pdf`, `cli.run_cli` and `EXAMPLES`, `paid_workers`
(the ledger's rows), `waiting.eventually`. The committed PDFs are in tests/fixtures/.
"""
