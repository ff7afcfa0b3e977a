"""`pipeline emulator`: a local Gemini API for trying the pipeline without a key or a bill."""

from __future__ import annotations

import socket

import typer

from pipeline.cli.net import bind
from pipeline.errors import SettingsError


def _latency(value: str) -> tuple[float, float]:
    try:
        low, _, high = value.partition(",")
        pair = (float(low), float(high or low))
    except ValueError:
        raise SettingsError(f"--latency {value!r}: give seconds as MIN,MAX, e.g. 0.5,2") from None
    if not 0 <= pair[0] <= pair[1]:
        raise SettingsError(f"--latency {value!r}: need 0 <= MIN <= MAX")
    return pair


def emulator(
    host: str = typer.Option("127.0.0.1", help="Interface to bind; keep it on loopback."),
    port: int = typer.Option(8089, help="TCP port; 0 picks a free one."),
    rpm: int | None = typer.Option(None, help="Requests per minute per key and model."),
    tpm: int | None = typer.Option(None, help="Input tokens per minute per key and model."),
    rpd: int | None = typer.Option(None, help="Requests per day (resets at midnight Pacific)."),
    window_s: float = typer.Option(60.0, "--window-s", help="Length of the RPM/TPM window."),
    latency: str = typer.Option("0,0", help="Answer latency drawn uniformly from MIN,MAX seconds."),
    fail_rate: float = typer.Option(0.0, help="Share of requests answered 500/503."),
    bad_json_rate: float = typer.Option(0.0, help="Share of JSON answers returned invalid."),
    thinking_tokens: int = typer.Option(24, help="Thinking tokens billed on 3.x models."),
    no_retry_info: bool = typer.Option(False, "--no-retry-info", help="429s without RetryInfo."),
    api_key: list[str] = typer.Option(["emulator-key"], "--api-key", help="Accepted key(s)."),
    seed: int = typer.Option(0, help="Seed for latency and fault draws."),
) -> None:
    """Serve a Gemini-compatible API (generateContent, countTokens) with quotas and faults."""
    import uvicorn

    from pipeline.llm.emulator.app import EmulatorConfig, create_emulator_app

    try:
        config = EmulatorConfig(
            api_keys=tuple(api_key),
            rpm=rpm,
            tpm=tpm,
            rpd=rpd,
            window_s=window_s,
            latency_s=_latency(latency),
            fail_rate=fail_rate,
            bad_json_rate=bad_json_rate,
            thinking_tokens=thinking_tokens,
            retry_info=not no_retry_info,
            seed=seed,
        )
    except ValueError as exc:
        raise SettingsError(f"emulator: {exc}") from None
    sock = bind(host, port)
    family = sock.family
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    base_url = f"http://{shown}:{bound}"
    print(f"Gemini emulator listening on {base_url} (stats: {base_url}/_emulator/stats)")
    print("Point a client at it with:")
    print(f"  export GOOGLE_GEMINI_BASE_URL={base_url}")
    print(f"  export GEMINI_API_KEY={api_key[0]}")
    print("  export PIPELINE_PROVIDER=emulator")
    # a rehearsal's queue, limiter state and documents apart from the real run's (README)
    print("  export PIPELINE_KEY_PREFIX=rehearsal", flush=True)
    # A stop (Ctrl-C, SIGTERM) cuts calls still sleeping out their simulated latency after
    # 2 s rather than waiting for each (uvicorn waits for in-flight requests by default).
    server = uvicorn.Server(uvicorn.Config(create_emulator_app(config), log_level="warning",
                                           lifespan="off", timeout_graceful_shutdown=2))
    server.run(sockets=[sock])
