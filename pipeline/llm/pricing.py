"""What a Gemini call costs, from the dated table in config/pricing.toml.

Prices change on known dates (3.8 Flash doubles on 2027-01-01) and models retire, so a
price is always looked up for the day of the call and the table carries a `version` that
every ledger row records. Numbers are parsed as Decimal straight from TOML and stay Decimal
to the end: a float would drift on the sums the budget is checked against.

The table is also the list of models: `canonical_model` turns any accepted spelling into the
one id that limiter buckets, prices, call-store and idempotency keys all use.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.errors import SettingsError, UnknownModel
from pipeline.llm.provider import Usage
from pipeline.resources import config_path
from pipeline.words import counted

PER_TOKENS = Decimal(1_000_000)
# Token limits when neither the model nor the table's defaults name one (Gemini 2.5 and
# later: a 1,048,576-token context window and 65,536 output tokens; see config/pricing.toml).
DEFAULT_MAX_INPUT_TOKENS = 1_048_576
DEFAULT_MAX_OUTPUT_TOKENS = 65_536
QUANTUM = Decimal("0.000000001")  # 1e-9 USD: exact for any realistic token count


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens for one model on one day; `long_*` apply above the threshold."""

    model: str
    effective_from: date
    input: Decimal
    output: Decimal  # thinking tokens are billed at this rate too
    cached_input: Decimal
    long_input: Decimal | None = None
    long_output: Decimal | None = None
    long_cached_input: Decimal | None = None
    long_context_threshold_tokens: int | None = None
    batch_discount: Decimal = Decimal("0.5")
    source: str = ""

    def is_long(self, prompt_tokens: int) -> bool:
        threshold = self.long_context_threshold_tokens
        return threshold is not None and prompt_tokens > threshold

    def rates(self, prompt_tokens: int, batch: bool = False) -> tuple[Decimal, Decimal, Decimal]:
        """(input, output, cached input) per 1M tokens for a request of this prompt size.

        The long-context tier prices the whole request, not just the tokens past the line.
        """
        if self.is_long(prompt_tokens):
            rates = (
                self.input if self.long_input is None else self.long_input,
                self.output if self.long_output is None else self.long_output,
                self.cached_input if self.long_cached_input is None else self.long_cached_input,
            )
        else:
            rates = (self.input, self.output, self.cached_input)
        if batch:
            return (
                rates[0] * self.batch_discount,
                rates[1] * self.batch_discount,
                rates[2] * self.batch_discount,
            )
        return rates


@dataclass(frozen=True)
class ModelInfo:
    name: str
    prices: tuple[ModelPrice, ...]  # sorted by effective_from
    released: date | None = None
    shutdown: date | None = None
    successor: str | None = None
    source: str = ""
    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS  # the context window
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS  # maxOutputTokens, thinking included


def canonical_model(name: str, prices: PriceTable | None = None) -> str:
    """`name`'s canonical model id in `prices` (default: the shipped table, read once).

    See `PriceTable.canonical`; raises UnknownModel for a model the table does not know.
    """
    return (prices or shipped_prices()).canonical(name)


@cache
def shipped_prices() -> PriceTable:
    """config/pricing.toml as shipped, loaded once per process (it changes with a release)."""
    return PriceTable.load()


def _as_date(at: datetime | date) -> date:
    if isinstance(at, datetime):
        return (at.astimezone(UTC) if at.tzinfo else at).date()
    return at


class PriceTable:
    """The loaded pricing table. Build with `PriceTable.load()`."""

    def __init__(self, models: dict[str, ModelInfo], aliases: dict[str, str], version: str):
        self._models = models
        self._aliases = aliases
        self.version = version

    @classmethod
    def load(cls, path: Path | str | None = None) -> PriceTable:
        file = Path(path) if path is not None else config_path("pricing.toml")
        try:
            with file.open("rb") as fh:
                raw = tomllib.load(fh, parse_float=Decimal)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(
                f"cannot read pricing table {file}: {exc}; fix or restore it"
            ) from None
        return cls.from_dict(raw, where=str(file))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "pricing table") -> PriceTable:
        try:
            version = str(raw["version"])
            discount = Decimal(str(raw.get("batch_discount", "0.5")))
            default_source = str(raw.get("default_source", ""))
            limits = (
                int(raw.get("default_max_input_tokens", DEFAULT_MAX_INPUT_TOKENS)),
                int(raw.get("default_max_output_tokens", DEFAULT_MAX_OUTPUT_TOKENS)),
            )
            models = {
                name: _parse_model(name, entry, discount, default_source, limits)
                for name, entry in raw.get("models", {}).items()
            }
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise SettingsError(
                f"{where}: malformed entry ({exc!r}); compare with the shipped table"
            ) from None
        aliases = {str(k): str(v) for k, v in raw.get("aliases", {}).items()}
        for alias, target in aliases.items():
            if target not in models:
                raise SettingsError(f"{where}: alias {alias!r} points at unknown model {target!r}")
        return cls(models, aliases, version)

    def known_models(self) -> list[str]:
        return sorted(self._models)

    def canonical(self, name: str) -> str:
        """The one id a model is known by, for limiter buckets, prices, call-store and
        idempotency keys alike ("gemini-3.5-flash-lite").

        Accepts the REST resource name ("models/gemini-3.5-flash-lite") and the aliases of
        the table's [aliases] section ("gemini-flash-lite-latest"); anything else must
        match a model exactly. A name with a version or method suffix
        ("gemini-3.5-flash-lite-001", "gemini-3.5-flash-lite:streamGenerateContent") is
        refused rather than priced and rate-limited as the model it starts with: it is a
        different model id, or not one at all. Raises UnknownModel naming the known models.
        """
        bare = name.strip().removeprefix("models/")
        bare = self._aliases.get(bare, bare)
        if bare in self._models:
            return bare
        near = difflib.get_close_matches(bare, [*self._models, *self._aliases], n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise UnknownModel(
            f"unknown model {name!r}: not in config/pricing.toml.{hint} "
            f"Known models: {', '.join(self.known_models())}"
            f" (aliases: {', '.join(sorted(self._aliases))}). "
            "Pick one of these (a models/ prefix is fine) or add the model to the pricing table."
        )

    def info(self, model_version: str) -> ModelInfo:
        return self._models[self.canonical(model_version)]

    def price(self, model_version: str, at: datetime | date) -> ModelPrice:
        """The price row in force for this model on the day of `at` (UTC)."""
        info = self.info(model_version)
        day = _as_date(at)
        current = [p for p in info.prices if p.effective_from <= day]
        if not current:
            raise UnknownModel(
                f"{info.name} has no price before {info.prices[0].effective_from}: "
                f"it was not available on {day}"
            )
        return current[-1]

    def cost(
        self, model_version: str, usage: Usage, at: datetime | date, batch: bool = False
    ) -> Decimal:
        """USD for one answered call: uncached input, cached input, output incl. thinking."""
        price = self.price(model_version, at)
        rate_in, rate_out, rate_cached = price.rates(usage.input_tokens, batch)
        cached = min(usage.cached_tokens, usage.input_tokens)
        total = (
            Decimal(usage.input_tokens - cached) * rate_in
            + Decimal(cached) * rate_cached
            + Decimal(usage.output_tokens + usage.thinking_tokens) * rate_out
        ) / PER_TOKENS
        return total.quantize(QUANTUM)

    def max_output_tokens(self, model: str) -> int:
        """The most output tokens (thinking included) one request to `model` may ask for."""
        return self.info(model).max_output_tokens

    def max_input_tokens(self, model: str) -> int:
        """`model`'s context window: no request can be billed more input tokens than this."""
        return self.info(model).max_input_tokens

    def worst_case_cost(
        self,
        model: str,
        input_tokens: int,
        max_output_tokens: int,
        at: datetime | date,
        batch: bool = False,
    ) -> Decimal:
        """The most a call can cost: nothing cached and every allowed output token used.

        `max_output_tokens` is the request's output bound, thinking included (callers pass
        `LLMRequest.output_bound_tokens`); the long-context tier is chosen from
        `input_tokens`, as Google chooses it from the prompt's size.
        """
        usage = Usage(input_tokens=input_tokens, output_tokens=max_output_tokens)
        return self.cost(model, usage, at, batch)

    def check_model(self, model: str, today: date | datetime | None = None) -> list[str]:
        """Warnings about using `model` on `today`; raises UnknownModel if it has no price."""
        info = self.info(model)
        day = _as_date(today or datetime.now(UTC))
        warnings: list[str] = []
        if info.shutdown is None:
            return warnings
        move = (
            f"switch to {info.successor}"
            if info.successor
            else f"no successor announced; pick one of {', '.join(self._current(day))}"
        )
        if info.shutdown <= day:
            routed = (
                f" Google now answers it with {info.successor}, billed at {info.successor} rates."
                if info.successor
                else ""
            )
            warnings.append(
                f"{info.name} was shut down on {info.shutdown}.{routed} {move.capitalize()}."
            )
        else:
            left = (info.shutdown - day).days
            warnings.append(f"{info.name} shuts down on {info.shutdown} "
                            f"(in {counted(left, 'day')}); {move}.")  # fmt: skip
        return warnings

    def retired_aliases(self, today: date | datetime | None = None) -> dict[str, str]:
        """Shut-down models that Google answers with their successor, as of `today`."""
        day = _as_date(today or datetime.now(UTC))
        return {
            name: info.successor
            for name, info in self._models.items()
            if info.successor and info.shutdown is not None and info.shutdown <= day
        }

    def _current(self, day: date) -> list[str]:
        return [
            name
            for name, info in sorted(self._models.items())
            if info.shutdown is None or info.shutdown > day
        ]


def _parse_model(
    name: str, entry: dict[str, Any], discount: Decimal, default_source: str,
    limits: tuple[int, int] = (DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_OUTPUT_TOKENS),
) -> ModelInfo:  # fmt: skip
    source = str(entry.get("source", default_source))
    threshold = entry.get("long_context_threshold_tokens")
    model_discount = Decimal(str(entry.get("batch_discount", discount)))
    prices = []
    for row in entry["prices"]:

        def dec(key: str, row: dict[str, Any] = row) -> Decimal | None:
            return Decimal(str(row[key])) if key in row else None

        input_rate = Decimal(str(row["input"]))
        cached_rate = dec("cached_input")
        prices.append(
            ModelPrice(
                model=name,
                effective_from=row["effective_from"],
                input=input_rate,
                output=Decimal(str(row["output"])),
                cached_input=input_rate if cached_rate is None else cached_rate,
                long_input=dec("long_input"),
                long_output=dec("long_output"),
                long_cached_input=dec("long_cached_input"),
                long_context_threshold_tokens=int(threshold) if threshold is not None else None,
                batch_discount=model_discount,
                source=str(row.get("source", source)),
            )
        )
    if not prices:
        raise ValueError(f"{name} has no prices")
    for p in prices:
        if not isinstance(p.effective_from, date):
            raise ValueError(f"{name}: effective_from must be a TOML date")
    return ModelInfo(
        name=name,
        prices=tuple(sorted(prices, key=lambda p: p.effective_from)),
        released=entry.get("released"),
        shutdown=entry.get("shutdown"),
        successor=entry.get("successor"),
        source=source,
        max_input_tokens=int(entry.get("max_input_tokens", limits[0])),
        max_output_tokens=int(entry.get("max_output_tokens", limits[1])),
    )
