"""Command line: parses arguments, calls one function, maps errors to exit codes.

Exit codes: 0 all done; 2 any bad input or bad config (the rest is still processed); 1 any
delivery or network failure. Messages go to stderr, one line each, naming the file or address.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dicom_mapping.convert import Converted, ConvertParams, convert_photo
from dicom_mapping.errors import InputError
from gateway import deliver, settings
from gateway.errors import ConfigError, GatewayError, TransientError
from gateway.intake import WorklistLookup, from_worklist
from gateway.network import Address, parse_address
from gateway.photos import load_photo

if TYPE_CHECKING:
    from gateway.item import Item
    from gateway.journal import Journal

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Clinical photos into PACS: de-identified, with consent, nothing lost.")
config_app = typer.Typer(no_args_is_help=True, help="Check the configuration.")
app.add_typer(config_app, name="config")

EXIT_OK, EXIT_NETWORK, EXIT_INPUT = 0, 1, 2


class IodChoice(StrEnum):
    sc = "sc"
    vl_photo = "vl-photo"


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config (else $PHOTO_GATEWAY_CONFIG)")]


def _say(message: str) -> None:
    typer.echo(f"photo-gateway: {message}", err=True)


def _config_path(config: Path | None) -> Path | None:
    if config is not None:
        return config
    env = os.environ.get("PHOTO_GATEWAY_CONFIG")
    return Path(env) if env else None


def _load(config: Path | None) -> settings.Settings | None:
    path = _config_path(config)
    return settings.load(path) if path else None


def _secret_and_options(cfg: settings.Settings | None) -> tuple[bytes, frozenset[str], str]:
    """The pseudonym secret, de-identification options and our AE title."""
    if cfg is not None and cfg.deid is not None:
        return settings.read_keys(cfg.deid.secret_file)[0], frozenset(cfg.deid.options), cfg.node.ae_title
    if cfg is not None:
        raise ConfigError("the config has no deid section (deid.secret_file)")
    state = settings.local_state_dir()
    return (settings.read_keys(state / "pseudonym.key")[0],
            frozenset({"retain-longitudinal-modified-dates"}), "PHOTOGW")


def _convert_all(
    photos: list[Path], meta: Path | None, params: ConvertParams, cfg: settings.Settings | None = None
) -> tuple[list[tuple[Path, Converted]], int]:
    """Convert each photo; report each bad one on stderr; return the good ones and a failure count."""
    done: list[tuple[Path, Converted]] = []
    bad = 0
    show_bar = sys.stderr.isatty() and len(photos) > 1
    with typer.progressbar(photos, label="converting", file=sys.stderr, hidden=not show_bar) as bar:
        for path in bar:
            try:
                item = load_photo(path, photos, meta)
                photo_meta, study_source = item.meta, None
                if photo_meta.patient is None:  # the order's patient, as the node would find it
                    photo_meta, study_source = from_worklist(photo_meta, _worklist(cfg))
                one = dataclasses.replace(params, study_uid_source=study_source)
                done.append((path, convert_photo(item.data, photo_meta, one)))
            except InputError as exc:
                bad += 1
                _say(f"{path}: {exc.reason}")
            except TransientError as exc:  # the worklist did not answer
                bad += 1
                _say(f"{path}: {exc}")
    return done, bad


def _worklist(cfg: settings.Settings | None) -> WorklistLookup | None:
    if cfg is None or cfg.worklist is None:
        return None
    from gateway.worklist import make_lookup

    return make_lookup(cfg.worklist.address, cfg.node.ae_title, 10)


def _params(secret: bytes, options: frozenset[str], iod: IodChoice, route: str = "") -> ConvertParams:
    return ConvertParams(secret=secret, received_at=dt.datetime.now().replace(microsecond=0),
                         iod=iod.value, route=route, options=options)


@app.command()
def convert(
    photos: Annotated[list[Path], typer.Argument(help="JPEG, PNG or HEIC files")],
    out: Annotated[Path, typer.Option("--out", help="directory for <SOPInstanceUID>.dcm")],
    meta: Annotated[Path | None, typer.Option("--meta", help="metadata JSON for every photo")] = None,
    iod: Annotated[IodChoice, typer.Option("--iod")] = IodChoice.sc,
    config: ConfigOpt = None,
) -> None:
    """Build exactly the DICOM objects that would be sent; no network."""
    try:
        cfg = _load(config)
        secret, options, _ = _secret_and_options(cfg)
        out.mkdir(parents=True, exist_ok=True)
    except ConfigError as exc:
        _say(str(exc))
        raise typer.Exit(EXIT_INPUT) from None
    except OSError as exc:
        _say(f"{out}: cannot create output directory ({exc.strerror})")
        raise typer.Exit(EXIT_INPUT) from None
    converted, bad = _convert_all(photos, meta, _params(secret, options, iod), cfg)
    for path, result in converted:
        target = out / f"{result.sop_instance_uid}.dcm"
        result.dataset.save_as(target, enforce_file_format=True)
        typer.echo(f"{path} -> {target}")
    raise typer.Exit(EXIT_INPUT if bad else EXIT_OK)


@app.command()
def send(
    photos: Annotated[list[Path], typer.Argument(help="JPEG, PNG or HEIC files")],
    to: Annotated[str | None, typer.Option("--to", help="AET@HOST:PORT")] = None,
    destination: Annotated[str | None, typer.Option("--destination", help="a destination in the config")] = None,
    meta: Annotated[Path | None, typer.Option("--meta")] = None,
    iod: Annotated[IodChoice | None, typer.Option("--iod")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds before giving up")] = 60,
    config: ConfigOpt = None,
) -> None:
    """Convert, stage, deliver, confirm, purge; exit 0 only when the PACS has every photo."""
    from gateway.sendjob import SendJob

    try:
        if (to is None) == (destination is None):
            raise ConfigError("give exactly one of --to AET@HOST:PORT and --destination NAME")
        cfg = _load(config)
        secret, options, our_ae = _secret_and_options(cfg)
        name, dest = _destination_entry(cfg, to, destination)
        job = SendJob.create(cfg, name, dest, secret, options, our_ae, iod.value if iod else None)
    except ConfigError as exc:
        _say(str(exc))
        raise typer.Exit(EXIT_INPUT) from None
    bad = failed = 0
    with job:
        staged: list[tuple[Path, list[str]]] = []
        for path in photos:
            try:
                item = load_photo(path, photos, meta)
                staged.append((path, job.stage(item.data, item.meta)))
            except InputError as exc:
                bad += 1
                _say(f"{path}: {exc.reason}")
        job.run(timeout)
        for path, ids in staged:
            for line, ok, is_input in job.report(ids):
                if ok:
                    typer.echo(f"{path} -> {line}")
                else:
                    _say(f"{path}: {line}")
                    bad += is_input
                    failed += not is_input
    raise typer.Exit(EXIT_INPUT if bad else EXIT_NETWORK if failed else EXIT_OK)


def _destination_entry(cfg: settings.Settings | None, to: str | None,
                       name: str | None) -> tuple[str, settings.Destination]:
    if to is not None:
        # An ad-hoc address: C-STORE success is the confirmation (no storage commitment).
        return "adhoc", settings.Destination(address=parse_address(to))
    if cfg is None:
        raise ConfigError("--destination needs a config (--config or $PHOTO_GATEWAY_CONFIG)")
    if name not in cfg.destinations:
        known = ", ".join(cfg.destinations) or "none"
        raise ConfigError(f"destination '{name}' is not in the config (known: {known})")
    return str(name), cfg.destinations[str(name)]


def _destination(cfg: settings.Settings | None, to: str | None, name: str | None) -> Address:
    return _destination_entry(cfg, to, name)[1].address


@app.command("echo")
def echo_cmd(
    target: Annotated[str, typer.Argument(help="AET@HOST:PORT or a destination name")],
    timeout: Annotated[float, typer.Option("--timeout")] = 10,
    config: ConfigOpt = None,
) -> None:
    """C-ECHO a PACS."""
    try:
        cfg = _load(config)
        address = _destination(cfg, target if "@" in target else None, None if "@" in target else target)
        our_ae = cfg.node.ae_title if cfg else "PHOTOGW"
    except ConfigError as exc:
        _say(str(exc))
        raise typer.Exit(EXIT_INPUT) from None
    try:
        deliver.echo(address, our_ae, timeout)
    except TransientError as exc:
        _say(str(exc))
        raise typer.Exit(EXIT_NETWORK) from None
    typer.echo(f"{address}: C-ECHO success")


@app.command()
def keygen(path: Annotated[Path, typer.Argument(help="key file to create (mode 0600)")]) -> None:
    """Write a new staging key or pseudonym secret file."""
    try:
        settings.write_key_file(path)
    except ConfigError as exc:
        _say(str(exc))
        raise typer.Exit(EXIT_INPUT) from None
    typer.echo(f"{path}: new key written")


queue_app = typer.Typer(no_args_is_help=True, help="The journal, for operators.")
app.add_typer(queue_app, name="queue")


def _configured(config: Path | None, what: str) -> settings.Settings:
    path = _config_path(config)
    if path is None:
        raise ConfigError(f"{what} needs a config (--config or $PHOTO_GATEWAY_CONFIG)")
    return settings.load(path)


def _journal(config: Path | None, what: str) -> Journal:
    from gateway.journal import Journal
    from gateway.node import journal_path

    cfg = _configured(config, what)
    if cfg.staging is None:
        raise ConfigError("the config has no staging section")
    path = journal_path(cfg)
    if not path.exists():
        raise ConfigError(f"{path}: no journal yet (has the node run?)")
    return Journal(path)


def _row(item: Item) -> dict[str, object]:
    return {"id": item.id, "state": item.state.value, "destination": item.destination,
            "reason": item.reason, "updated": dt.datetime.fromtimestamp(item.updated).isoformat(timespec="seconds")}


@queue_app.command("list")
def queue_list(
    all_items: Annotated[bool, typer.Option("--all", help="include finished items")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOpt = None,
) -> None:
    """Unfinished items (--all adds finished ones)."""
    import json

    try:
        journal = _journal(config, "queue list")
    except ConfigError as exc:
        _say(str(exc))
        raise typer.Exit(EXIT_INPUT) from None
    rows = [_row(i) for i in journal.list(unfinished_only=not all_items)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['id']}  {r['state']:<11} {r['destination'] or '-':<12} {r['updated']}  {r['reason'] or ''}")
    typer.echo(f"{len(rows)} item(s)", err=True)


@queue_app.command("show")
def queue_show(item_id: str, config: ConfigOpt = None) -> None:
    """One item, every field."""
    import dataclasses
    import json

    try:
        journal = _journal(config, "queue show")
    except ConfigError as exc:
        _say(str(exc))
        raise typer.Exit(EXIT_INPUT) from None
    item = journal.get(item_id)
    if item is None:
        _say(f"no item {item_id}")
        raise typer.Exit(EXIT_INPUT)
    typer.echo(json.dumps({**dataclasses.asdict(item), "state": item.state.value}, indent=2))


@queue_app.command("retry")
def queue_retry(
    item_id: Annotated[str | None, typer.Argument()] = None,
    all_items: Annotated[bool, typer.Option("--all", help="every quarantined or waiting item")] = False,
    config: ConfigOpt = None,
) -> None:
    """Put quarantined (or waiting) items back in line: the running node picks them up."""
    from gateway.item import State

    try:
        if (item_id is None) == (not all_items):
            raise ConfigError("give an item id or --all")
        journal = _journal(config, "queue retry")
    except ConfigError as exc:
        _say(str(exc))
        raise typer.Exit(EXIT_INPUT) from None
    stuck = {State.QUARANTINED, State.WAITING}
    items = journal.list(states=stuck) if all_items else [i for i in [journal.get(str(item_id))] if i]
    if not all_items and (not items or items[0].state not in stuck):
        _say(f"{item_id}: not a quarantined or waiting item")
        raise typer.Exit(EXIT_INPUT)
    for item in items:
        back = State.CONVERTED if item.sop_instance_uid else State.RECEIVED
        journal.transition(item.id, back, expect=stuck, attempts=0, next_attempt_at=None,
                           reason="retried by an operator")
        typer.echo(f"{item.id}: {back.value}")


@app.command()
def purge(config: ConfigOpt = None) -> None:
    """Apply retention now: confirmed items' staging, and expired rejected files."""
    from gateway.clock import SYSTEM
    from gateway.item import State
    from gateway.node import open_store
    from gateway.pipeline import Pipeline

    try:
        cfg = _configured(config, "purge")
        journal, staging = open_store(cfg)
        secret, options, _ = _secret_and_options(cfg)
    except ConfigError as exc:
        _say(str(exc))
        raise typer.Exit(EXIT_INPUT) from None
    pipeline = Pipeline(cfg, journal, staging, secret, SYSTEM, options=options)
    purged = sum(pipeline._purge(i) for i in journal.list(states={State.COMMITTED}))
    orphans = pipeline.sweep_orphans()
    rejected = 0
    if cfg.sources.folder is not None:
        from gateway.ingest.folder import FolderDoor

        rejected = FolderDoor(cfg.sources.folder, None).purge_rejected()  # type: ignore[arg-type]
    typer.echo(f"purged {purged} confirmed item(s), {orphans} unacknowledged leftover(s), "
               f"{rejected} expired rejected file(s)")


@app.command()
def lookup(
    patient_id: Annotated[str, typer.Argument(help="the hospital's patient ID")],
    issuer: Annotated[str, typer.Option("--issuer", help="issuer of the patient ID")] = "",
    config: ConfigOpt = None,
) -> None:
    """Print the pseudonym under which this patient's photos are filed in the PACS (audited)."""
    from dicom_mapping.uids import patient_pseudonym
    from gateway.audit import audit

    try:
        cfg = _load(config)
        secret, _, _ = _secret_and_options(cfg)
    except ConfigError as exc:
        _say(str(exc))
        raise typer.Exit(EXIT_INPUT) from None
    pseudonym = patient_pseudonym(secret, issuer, patient_id)
    audit(cfg, "lookup", pseudonym=pseudonym)
    typer.echo(pseudonym)


@app.command()
def serve(config: ConfigOpt = None) -> None:
    """Run the node: DICOM SCP, hot folder, HTTP, scheduler. Stops on SIGTERM or Ctrl-C."""
    import signal
    import threading

    from gateway.node import Node

    try:
        node = Node(_configured(config, "serve"))
        node.start()
    except ConfigError as exc:
        _say(str(exc))
        raise typer.Exit(EXIT_INPUT) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    typer.echo("photo-gateway: serving", err=True)
    stop.wait()
    node.stop()


@config_app.command("check")
def config_check(
    connect: Annotated[bool, typer.Option("--connect", help="also C-ECHO every destination and the worklist")] = False,
    config: ConfigOpt = None,
) -> None:
    """Validate the configuration (and its key files)."""
    try:
        path = _config_path(config)
        if path is None:
            raise ConfigError("config check needs a config (--config or $PHOTO_GATEWAY_CONFIG)")
        cfg = settings.load(path)
        if cfg.deid is not None:
            settings.read_keys(cfg.deid.secret_file)
        if cfg.staging is not None:
            settings.read_keys(cfg.staging.key_file)
        for tls in (cfg.node.tls, cfg.sources.http.tls if cfg.sources.http else None):
            for f in ([tls.cert_file, tls.key_file, tls.ca_file] if tls else []):
                if f is not None and not f.is_file():
                    raise ConfigError(f"{path}: TLS file {f} does not exist")
    except ConfigError as exc:
        _say(str(exc))
        raise typer.Exit(EXIT_INPUT) from None
    typer.echo(f"{path}: ok")
    if not connect:
        return
    peers = [(f"destination {n}", d.address) for n, d in cfg.destinations.items()]
    if cfg.worklist is not None:
        peers.append(("worklist", cfg.worklist.address))
    failed = 0
    for what, address in peers:
        try:
            deliver.echo(address, cfg.node.ae_title)
            typer.echo(f"{what} {address}: C-ECHO success")
        except TransientError as exc:
            failed += 1
            _say(f"{what}: {exc}")
    if failed:
        raise typer.Exit(EXIT_NETWORK)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # pynetdicom reports a failed association at ERROR; the CLI says it once, in its own words.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    from gateway.node import quiet_pydicom

    quiet_pydicom()
    try:
        app()
    except GatewayError as exc:  # a last guard: never a traceback for a user error
        _say(str(exc))
        sys.exit(EXIT_INPUT if isinstance(exc, ConfigError) else EXIT_NETWORK)


if __name__ == "__main__":
    main()
