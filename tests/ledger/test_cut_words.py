"""What a stop says of the calls it cut off when more than one provider answered them (one
process asks one provider, so only a ledger shared by several says this): each kind its own
part, and only Gemini's may have been billed."""

from __future__ import annotations

from decimal import Decimal

from pipeline.ledger.cut import CutCalls, CutKind


def test_a_mixed_stop_says_each_kind_its_own_part() -> None:
    cut = CutCalls((CutKind("gemini", 2, Decimal("0.02")), CutKind("emulator", 1, Decimal("0.01")),
                    CutKind("offline", 3, Decimal(0))))  # fmt: skip
    assert (cut.calls, cut.priced, cut.billed) == (6, 3, 2)
    assert cut.words() == (
        "6 calls in flight were cut off: 2 of them (Gemini's) may have been billed, are booked "
        "at their worst case ($0.020000000), and running again pays for them again; one is the "
        "emulator's, a rehearsal (priced as Gemini bills, never billed), is booked at its worst "
        "case ($0.010000000), and running again pays for it again in the rehearsal's dollars; "
        "3 of them are the offline analyzer's (no provider asked), so they cost nothing and "
        "nothing is paid again"
    )


def test_offline_calls_alone_are_priced_at_nothing() -> None:
    cut = CutCalls((CutKind("offline", 1, Decimal(0)),))
    assert cut.priced == 0
    assert cut.again_words() == ("1 call of it was cut off in flight: it is the offline "
                                 "analyzer's (no provider asked), so it costs nothing and "
                                 "nothing is paid again when it runs")  # fmt: skip
