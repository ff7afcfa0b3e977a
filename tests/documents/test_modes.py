"""tasks/modes.py: reading `--deadline` and choosing a mode from it (no services needed: the
rule is pure; the scenarios in tests/scenarios/test_batch_deadline.py run it end to end)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.errors import BadDeadline, DeadlineTooShort, InputError
from pipeline.settings import load_settings
from tasks.modes import choose_mode, due, parse_deadline

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "after"), [
    ("6h", timedelta(hours=6)), ("90m", timedelta(minutes=90)),
    ("1h30m", timedelta(minutes=90)), ("2d", timedelta(days=2)), ("45s", timedelta(seconds=45)),
])  # fmt: skip
def test_a_duration_counts_from_now(text: str, after: timedelta) -> None:
    assert parse_deadline(text, NOW) == NOW + after


def test_a_timestamp_needs_its_offset_and_is_kept_in_utc() -> None:
    assert parse_deadline("2026-12-01T12:00Z", NOW) == datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert parse_deadline("2026-12-01T12:00+01:00", NOW) == datetime(2026, 12, 1, 11,
                                                                     tzinfo=UTC)  # fmt: skip
    with pytest.raises(BadDeadline, match="no time zone; add Z"):
        parse_deadline("2026-12-01T12:00", NOW)


@pytest.mark.parametrize("text", ["soon", "", "45", "0h", "2026-11-30T11:00Z"])
def test_what_cannot_be_a_deadline_is_refused_with_both_forms(text: str) -> None:
    with pytest.raises(BadDeadline) as refused:
        parse_deadline(text, NOW)
    assert isinstance(refused.value, InputError)
    assert "6h" in str(refused.value) and "2026-12-01T12:00Z" in str(refused.value)


def test_auto_batches_only_when_the_deadline_leaves_room() -> None:
    s = load_settings()  # defaults: 24 h room, 2 h margin
    assert choose_mode("auto", None, s, NOW).mode == "batch"
    far = choose_mode("auto", NOW + timedelta(hours=30), s, NOW)
    assert far.mode == "batch" and far.args()["deadline"] == "2026-12-01T18:00:00+00:00"
    near = choose_mode("auto", NOW + timedelta(hours=6), s, NOW)
    assert near.mode == "interactive" and "under the 24 h Batch Mode needs" in near.why
    assert near.args()["mode_requested"] == "auto"
    assert choose_mode("interactive", NOW + timedelta(days=9), s, NOW).mode == "interactive"


def test_batch_keeps_its_choice_and_refuses_only_a_deadline_inside_the_margin() -> None:
    s = load_settings()
    kept = choose_mode("batch", NOW + timedelta(hours=6), s, NOW)
    assert kept.mode == "batch" and "finished interactively from 2026-11-30T16:00" in kept.why
    with pytest.raises(DeadlineTooShort) as refused:
        choose_mode("batch", NOW + timedelta(minutes=90), s, NOW)
    assert "--mode auto" in str(refused.value)
    assert "PIPELINE_BATCH_FALLBACK_MARGIN_S" in str(refused.value)
    with pytest.raises(ValueError, match="interactive, batch or auto"):
        choose_mode("overnight", None, s, NOW)


def test_the_fallback_is_due_margin_before_the_deadline() -> None:
    s = load_settings(batch_fallback_margin_s=3600)
    args = {"deadline": (NOW + timedelta(hours=3)).isoformat()}
    assert due(args, s, NOW) == 7200
    assert due(args, s, NOW + timedelta(hours=2, minutes=1)) == 0
    assert due({}, s, NOW) is None


def test_the_words_say_whether_the_mode_was_asked_or_is_the_settings() -> None:
    """A submission without --mode runs in PIPELINE_MODE (interactive by default): `status`
    must not say "as asked" for a mode nobody asked for."""
    from pipeline.llm.pricing import shipped_prices
    from tasks.submission import refusals

    s = load_settings()
    prices = shipped_prices()
    _, default, _ = refusals(s, prices, None, None, None, None, False, NOW)
    _, asked, _ = refusals(s, prices, None, None, "interactive", None, False, NOW)
    assert (default.mode, asked.mode) == ("interactive", "interactive")
    assert default.why == ("interactive, PIPELINE_MODE's value (--mode, or the API's mode, chooses "
                           "another)")
    assert asked.why == "interactive, as asked"
    batch = load_settings(mode="batch")
    _, from_setting, _ = refusals(batch, prices, None, None, None, None, False, NOW)
    assert from_setting.mode == "batch" and "PIPELINE_MODE" in from_setting.why


@pytest.mark.parametrize(("setting", "mode"), [
    ("interactive", "interactive"), ("batch", "batch"), ("auto", "batch"),
])  # fmt: skip
def test_a_retry_whose_mode_is_forgotten_names_pipeline_mode_not_an_option_it_lacks(
    setting: str, mode: str
) -> None:
    """A retried document whose job record expired runs in PIPELINE_MODE's mode; the note
    says so, and offers no `--mode`: neither `pipeline retry` nor POST /batches/{id}/retry
    takes one."""
    from tasks.retry import kept_mode

    args, note = kept_mode(None, load_settings(mode=setting), NOW)
    assert args is not None and args["mode"] == mode and args["mode_why"] == note
    assert note is not None and "its mode is not recorded" in note
    assert f"PIPELINE_MODE ({setting})" in note, note
    assert "--mode" not in note, note
