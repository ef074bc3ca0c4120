"""Command line: `python -m settlement verify RECEIPT.json [--key FILE] [--require-consent]`
and `... serve`.

`verify` lets anyone holding a saved receipt check it offline, without trusting
or even reaching the server. Exit codes: 0 valid, 1 invalid (the first fault is
named), 2 the input could not be read at all. It also checks every party
signature (protocol 1.1) and says which statements are signed, by which key;
`--require-consent` also refuses a receipt whose agreed offer or acceptance is
not party-signed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from settlement import webhooks_cli
from settlement.consent import missing_consent, party_signatures, spoken
from settlement.ledger import verify_receipt
from settlement.signing import load_public_keys

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_UNREADABLE = 2


class InputError(Exception):
    """The file could not be used at all; distinct from a receipt that fails checks."""


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A key given twice makes a receipt mean two things; refuse it instead of guessing."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InputError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> None:
    raise InputError(f"{name} is not a JSON value")


def _read_text(path: Path, what: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path} is not UTF-8 text") from exc


def load_receipt(path: Path) -> dict[str, Any]:
    """Read a saved receipt: UTF-8 JSON holding one object."""
    text = _read_text(path, "receipt file")
    try:
        value = json.loads(
            text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
    except (json.JSONDecodeError, InputError, RecursionError) as exc:
        raise InputError(f"receipt file {path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InputError(f"receipt file {path} does not hold a JSON object")
    return value


def load_keys(path: Path) -> dict[str, bytes]:
    """Read `--key`: a bare base64 public key or a saved `/api/keys` document."""
    text = _read_text(path, "key file")
    try:
        return load_public_keys(text)
    except ValueError as exc:
        raise InputError(f"key file {path}: {exc}") from exc


def _valid_message(receipt: dict[str, Any]) -> str:
    return (
        f"valid: receipt {receipt['receipt_id']} for {receipt['amount']} "
        f"{receipt['currency']}, {len(receipt['events'])} events, chain intact"
    )


def _consent_lines(found: list[dict[str, Any]]) -> list[str]:
    lines = []
    for item in found:
        who = f"seq {item['seq']} {item['type']} by Party {item['party']}"
        if item["signed"]:
            lines.append(f"party-signed: {who}, key_id {item['key_id']} ({spoken(item['key_id'])})")
        else:
            lines.append(f"unsigned: {who}")
    return lines


def run_verify(receipt_path: Path, key_path: Path | None, require_consent: bool = False) -> int:
    """Verify one receipt file, print the verdict, and return the exit code."""
    try:
        receipt = load_receipt(receipt_path)
        keys = load_keys(key_path) if key_path is not None else None
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    fault = verify_receipt(receipt, keys)
    if fault:
        print(f"invalid: {fault}")
        return EXIT_INVALID
    _, found = party_signatures(receipt["events"])
    if require_consent:
        missing = missing_consent(receipt["events"], found)
        if missing:
            print(f"invalid: consent required, but {missing}")
            return EXIT_INVALID
    print(_valid_message(receipt))
    if keys is None:
        print("signature not checked (no --key given)")
    else:
        print(f"signature valid (key {receipt['signature']['key_id']})")
    # A receipt where no seat had a key (protocol 1.0) prints what it always did.
    if any(item["signed"] or item["key_id"] for item in found):
        for line in _consent_lines(found):
            print(line)
    return EXIT_VALID


def run_serve(argv: list[str]) -> int:
    """Start the server; imported lazily so `verify` works without server dependencies."""
    try:
        import app  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name != "app":
            raise
        print("error: app.py not found; run this from the repository root", file=sys.stderr)
        return EXIT_UNREADABLE
    result = app.main(argv)
    return result if isinstance(result, int) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m settlement", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check a saved receipt offline")
    verify.add_argument("receipt", type=Path, help="the saved receipt JSON file")
    verify.add_argument(
        "--key",
        type=Path,
        help="a base64 Ed25519 public key or a saved /api/keys document; also checks the signature",
    )
    verify.add_argument(
        "--require-consent",
        action="store_true",
        help="also fail unless the agreed offer and the acceptance are signed by the parties",
    )
    commands.add_parser("serve", help="run the server (options as for app.py)", add_help=False)
    webhooks_cli.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    if args_list[:1] == ["serve"]:
        # Everything after `serve` belongs to app.py's own parser, --help included.
        return run_serve(args_list[1:])
    args = build_parser().parse_args(args_list)
    if args.command == "webhooks":
        return webhooks_cli.run_webhooks(args.database, args.redeliver)
    if args.command == "webhook-secret":
        return webhooks_cli.run_webhook_secret(args.key_dir, args.database)
    return run_verify(args.receipt, args.key, args.require_consent)


if __name__ == "__main__":
    sys.exit(main())
