"""``lifecycle generate`` and ``lifecycle serve-model``: sample from, or serve, one trained model.

Sampling flags are the fields of :class:`phases.config.InferenceConfig` (the preset's
``inference:`` section gives the defaults), validated by it, so a bad value fails with the
same one-line message as in a pipeline config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# flag -> InferenceConfig field
SAMPLING_FLAGS = {
    "greedy": "greedy",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "stop": "stop",
    "max_new_tokens": "max_new_tokens",
    "seed": "seed",
    "num_samples": "num_return_sequences",
    "best_of": "best_of",
    "batch_size": "batch_size",
    "chat": "chat",
}


def add_parsers(sub) -> None:
    g = sub.add_parser("generate", help="sample completions from a model (a directory or models:/NAME@ALIAS)")
    g.add_argument("--model", required=True, help="model directory, models:/NAME@ALIAS or models:/NAME/VERSION")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt: its completion streams to the terminal")
    src.add_argument("--prompts", metavar="FILE.jsonl", help='JSONL of {"prompt": ...} or {"messages": [...]} rows: writes JSONL records')
    g.add_argument("--output", metavar="FILE.jsonl", help="where --prompts records go (default: stdout)")
    g.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wrap plain prompts in the chat template (default: the preset's inference.chat)",
    )
    g.add_argument("--greedy", action="store_true", default=None, help="greedy decoding (argmax)")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-k", type=int, help="0 disables")
    g.add_argument("--top-p", type=float, help="in (0, 1]; 1 disables")
    g.add_argument("--min-p", type=float, help="0 disables")
    g.add_argument("--repetition-penalty", type=float, help="1 disables")
    g.add_argument("--stop", action="append", help="stop string (repeatable)")
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--num-samples", type=int, help="completions per prompt (num_return_sequences)")
    g.add_argument("--best-of", type=int, help="sample N, keep the reward model's favourite")
    g.add_argument("--reward-model", help="reward model directory for --best-of (default: MODEL/reward_model)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--config", default="tiny", help="preset whose inference: section gives the defaults")

    s = sub.add_parser("serve-model", help="serve a model over an OpenAI-compatible HTTP API (transformers serve)")
    s.add_argument("model", help="model directory (fp32 or the inference phase's int8/), or models:/NAME@ALIAS")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--name", default="llm-lifecycle", help="model id clients send and /v1/models lists")
    s.add_argument("--max-tokens-cap", type=int, default=256, help="requests asking for more tokens get a 400")
    s.add_argument("--default-max-tokens", type=int, default=64, help="tokens generated when a request names none")
    s.add_argument("--max-prompt-chars", type=int, default=20_000, help="longer prompts get a 413")


def sampling_config(args):
    """The preset's inference section with the given flags applied, validated."""
    from phases.config import load_raw, validate

    raw = load_raw(args.config)
    section = dict(raw.get("inference") or {})
    for flag, field in SAMPLING_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            section[field] = value
    section.update(quantize=False, prompts=[], prompts_file=None)  # a command samples; the phase measures
    if args.best_of is None:
        section["best_of"] = 1  # best-of is opt-in on the command line
    return validate({**raw, "inference": section}).inference


def _quiet() -> None:
    """No load-report tables or progress bars between the user and the completion."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def generate(args) -> int:
    from flows.env import configure

    configure()  # offline, and models:/ URIs resolve in $LIFECYCLE_HOME's registry unless MLFLOW_TRACKING_URI says otherwise
    _quiet()
    from phases.errors import ConfigError, DataError

    cfg = sampling_config(args)
    if args.prompt is not None and not args.prompt.strip():
        raise DataError("--prompt is empty; give some text to continue")
    from phases.inference.generate import generate as run
    from phases.inference.generate import load_model, read_prompts, write_jsonl
    from phases.inference.resolve import resolve

    rows = [{"prompt": args.prompt}] if args.prompt is not None else read_prompts(args.prompts)
    resolved = resolve(args.model)
    model, tokenizer = load_model(resolved.model_dir, resolved.tokenizer_dir)
    if cfg.best_of > 1:
        from phases.inference import best_of as B

        reward_path = Path(args.reward_model) if args.reward_model else B.reward_dir(resolved.model_dir)
        if reward_path is None or not (reward_path / "config.json").is_file():
            raise ConfigError(
                f"--best-of {cfg.best_of} is unavailable: no reward model at {reward_path or resolved.model_dir / 'reward_model'}; "
                f"pass --reward-model DIR (the align output's reward_model/, from align.method grpo or rloo)"
            )
        records, figures = B.best_of_n(model, tokenizer, *B.load_reward_model(reward_path), rows, cfg)
        print(json.dumps(figures), file=sys.stderr)
    elif args.prompt is not None and cfg.num_return_sequences == 1:
        from transformers import TextStreamer

        records = run(model, tokenizer, rows, cfg, streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True))
        r = records[0]
        print(f"\n[{r['completion_tokens']} tokens, {r['latency_s']:.2f} s, finish: {r['finish_reason']}]", file=sys.stderr)
        return 0
    else:
        records = run(model, tokenizer, rows, cfg)
    if args.prompt is not None:
        for r in records:
            print(r["completion"])
        return 0
    if args.output:
        write_jsonl(records, Path(args.output))
        print(f"{len(records)} completions -> {args.output}", file=sys.stderr)
    else:
        for r in records:
            print(json.dumps(r, ensure_ascii=False))
    return 0


def serve_model(args) -> int:
    from flows.env import configure

    configure()  # offline, and models:/ URIs resolve in $LIFECYCLE_HOME's registry unless MLFLOW_TRACKING_URI says otherwise
    _quiet()
    from phases.errors import ConfigError
    from phases.inference.resolve import resolve
    from phases.inference.server import Limits, serve

    if not 1 <= args.default_max_tokens <= args.max_tokens_cap:
        raise ConfigError(f"--default-max-tokens={args.default_max_tokens} must be between 1 and --max-tokens-cap={args.max_tokens_cap}")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port={args.port} is not a TCP port (1-65535)")
    limits = Limits(max_tokens_cap=args.max_tokens_cap, default_max_tokens=args.default_max_tokens, max_prompt_chars=args.max_prompt_chars)
    resolved = resolve(args.model)
    print(f"serving {args.model} as {args.name!r} on http://{args.host}:{args.port}/v1 (Ctrl-C stops)", file=sys.stderr)
    serve(resolved, host=args.host, port=args.port, name=args.name, limits=limits)
    return 0


COMMANDS = {"generate": generate, "serve-model": serve_model}
