"""The `kiosk` command line: verify two photos, evaluate on LFW or any pairs file, train, benchmark.

Exit codes of `kiosk verify`: 0 = ACCEPT, 1 = REJECT, 2 = bad input (one-line reason on stderr),
3 = no usable weights. Other commands: 0 = done, 2 = bad input, 3 = no usable weights; `kiosk audit verify`:
1 = the audit log's hash chain is broken.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from kiosk.errors import FaceNotUsableError, KioskError, WeightsError
from kiosk.paths import DEFAULT_WEIGHTS, LIVENESS_WEIGHTS, datasets_dir

log = logging.getLogger("kiosk.cli")

EXIT_ACCEPT, EXIT_REJECT, EXIT_BAD_INPUT, EXIT_NO_WEIGHTS = 0, 1, 2, 3
EXIT_AUDIT_BROKEN = 1  # kiosk audit verify: the hash chain is broken


def _engine(args):
    from kiosk.vision.engine import FaceEngine  # noqa: PLC0415 (torch import only for commands that need it)
    return FaceEngine(args.weights)


def refuse_shipped(out: Path, shipped: Path, replace_shipped: bool) -> None:
    """Training and calibration write a new file; over a shipped one only when asked (--replace-shipped)."""
    if Path(out).resolve() == Path(shipped).resolve() and not replace_shipped:
        raise KioskError(f"{out} is shipped with the kiosk: give --out NEW{Path(shipped).suffix}, or --replace-shipped "
                         "to overwrite it")


def cmd_verify(args) -> int:
    from kiosk.rules.decision import decide  # noqa: PLC0415
    from kiosk.vision.threads import set_threads  # noqa: PLC0415
    set_threads()  # the kiosk's own rule, as in the app
    engine = _engine(args)
    features = [engine.embed_file(path) for path in (args.image_a, args.image_b)]
    threshold = engine.default_threshold if args.threshold is None else args.threshold
    # the kiosk's face rule on one pair of photos; liveness is not checked (kiosk.api runs the kiosk's attempt)
    verdict = decide("", [float(engine.similarity(features[0], features[1]))], threshold)
    if args.json:
        print(json.dumps({"probability": verdict.score, "threshold": verdict.threshold, "verdict": verdict.verdict,
                          "reason": verdict.reason, "liveness": "not checked"}))
    else:
        print(f"P(same) = {verdict.score:.4f}  threshold {verdict.threshold:.4f}  {verdict.verdict} "
              "(face only, liveness not checked)")
    return EXIT_ACCEPT if verdict.accepted else EXIT_REJECT


def _print_table(results: dict[str, dict]):
    keys = ["accuracy", "accuracy_std", "auc", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3", "pairs", "missed_faces",
            "unreadable"]
    names = list(results)
    print(f"{'metric':<18}" + "".join(f"{n:>26}" for n in names))
    for key in keys:
        cells = []
        for name in names:
            v = results[name].get(key)
            cells.append(f"{v:>26.4f}" if isinstance(v, float) else f"{v!s:>26}")
        print(f"{key:<18}" + "".join(cells))


def _evaluate(args, pairs) -> int:
    from kiosk.lab.evaluation import report, score_pairs_ours, score_pairs_peer  # noqa: PLC0415
    results = {}
    if not args.peer_only:
        engine = _engine(args)
        scores, stats = score_pairs_ours(engine, pairs, "siamese")
        results["siamese"] = dict(report(scores, pairs, stats, engine.default_threshold), model=str(args.weights))
    if args.peer or args.peer_only:
        from kiosk.lab.peer import FaceRecognitionPeer  # noqa: PLC0415
        peer = FaceRecognitionPeer()
        scores, stats = score_pairs_peer(peer, pairs, "face_recognition")
        results["face_recognition"] = dict(report(scores, pairs, stats), model=peer.name)
    _print_table(results)
    print("missed faces: aligned from the dataset's fixed LFW-style framing box and still scored (same rule for "
          "every model); unreadable files score as rejections")
    unreadable = max(r.get("unreadable", 0) for r in results.values())
    if unreadable:
        print(f"{unreadable} image file(s) could not be read (the log names each and says why)")
    if args.json:
        main_result = results.get("siamese") or results["face_recognition"]
        out = dict(main_result, **({"peer": results["face_recognition"]} if len(results) > 1 else {}))
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


def cmd_evaluate_lfw(args) -> int:
    from kiosk.lab.datasets import parse_folds, read_lfw_pairs  # noqa: PLC0415
    pairs = read_lfw_pairs(args.pairs, args.root, parse_folds(args.folds))
    return _evaluate(args, pairs)


def cmd_evaluate_pairs(args) -> int:
    from kiosk.lab.datasets import read_pairs_csv  # noqa: PLC0415
    return _evaluate(args, read_pairs_csv(args.csv, allow_outside=args.allow_outside))


def cmd_evaluate_liveness(args) -> int:
    """APCER / BPCER / ACER of the liveness detector on labelled frames, per frame and, where the CSV has an
    ``attempt`` column, per attempt (its least live frame, as the kiosk fuses them, against the same threshold)."""
    from kiosk.lab.training.liveness import evaluate_frames, measure, read_labels  # noqa: PLC0415
    from kiosk.vision.liveness import LivenessModel  # noqa: PLC0415
    model = LivenessModel.load(args.liveness_weights)
    rows = read_labels(args.csv)
    attempts = [r[3] for r in rows] if any(r[3] for r in rows) else None
    result = evaluate_frames(model, measure(rows, model.crop_scale), attempts)
    for key in ("images", "missed_faces", "threshold", "apcer", "bpcer", "acer", "auc"):
        value = result[key]
        print(f"{key:<14}{value:.4f}" if isinstance(value, float) else f"{key:<14}{value}")
    if "attempts" in result:
        a = result["attempts"]
        print(f"attempts      {a['count']}: APCER {a['apcer']:.4f}  BPCER {a['bpcer']:.4f}  ACER {a['acer']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def cmd_train_liveness(args) -> int:
    from kiosk.lab.training.liveness import train_liveness  # noqa: PLC0415
    from kiosk.paths import LIVENESS_WEIGHTS  # noqa: PLC0415
    refuse_shipped(args.out, LIVENESS_WEIGHTS, args.replace_shipped)
    cv = train_liveness(args.csv, args.out, args.crop_scale, args.weight_decay)["cross_validation"]
    print(f"wrote {args.out}: leave-one-person-out on {cv['frames']} frames: APCER {cv['apcer']:.4f}, BPCER "
          f"{cv['bpcer']:.4f}, ACER {cv['acer']:.4f}, AUC {cv['auc']:.4f}; threshold {cv['threshold']:.4f}")
    a = cv.get("attempts")
    if a:
        print(f"  attempts of {a['frames_per_attempt']} consecutive frames, fused as the kiosk does: {a['attempts']} "
              f"from {a['recordings']} recordings; attacks accepted {a['attacks_accepted']}/{a['attack_attempts']} "
              f"(APCER {a['apcer']:.4f}), live refused {a['live_refused']}/{a['live_attempts']} (BPCER "
              f"{a['bpcer']:.4f}), ACER {a['acer']:.4f}")
    return 0


def cmd_train(args) -> int:
    from kiosk.lab.datasets import parse_folds  # noqa: PLC0415
    from kiosk.lab.training.head import HeadConfig, train_head  # noqa: PLC0415
    refuse_shipped(args.out, DEFAULT_WEIGHTS, args.replace_shipped)
    data = [str(Path(d)) for d in (args.data or [datasets_dir() / "lfw/lfw-deepfunneled", datasets_dir() / "celeba-subset"])]
    config = HeadConfig(dataset_dirs=data, lfw_root=str(args.lfw_root), pairs_file=str(args.pairs),
                        report_folds=parse_folds(args.exclude_folds), validation_folds=parse_folds(args.validation_folds),
                        seed=args.seed)
    meta = train_head(config, args.out)
    v = meta["validation"]
    print(f"wrote {args.out}: {meta['selection']['chosen']}, threshold {meta['threshold']:.4f} (validation "
          f"FAR {v['far']:.4f}, FRR {v['frr']:.4f}, TAR at FAR 1% {v['tar_at_far_1e-2']:.4f} on {v['pairs']} pairs)")
    return 0


def cmd_calibrate(args) -> int:
    from kiosk.lab.training.head import recalibrate  # noqa: PLC0415
    refuse_shipped(args.out, DEFAULT_WEIGHTS, args.replace_shipped)
    meta = recalibrate(args.weights, args.out, args.target_far, args.lfw_root, args.pairs)
    v = meta["validation"]
    print(f"wrote {args.out}: threshold {meta['threshold']:.4f} for FAR <= {args.target_far:.4f} on {v['pairs']} "
          f"validation pairs (FAR {v['far']:.4f}, FRR {v['frr']:.4f})")
    return 0


def _identify_protocols(args):
    from kiosk.lab.datasets import parse_folds  # noqa: PLC0415
    from kiosk.lab.open_set import build_protocol  # noqa: PLC0415
    return build_protocol(args.root, args.pairs, parse_folds(args.folds))


def cmd_evaluate_identify(args) -> int:
    """Open-set identification (1:N) on LFW (kiosk/lab/open_set.py): rank-1, DIR at FPIR 1 % and 0.1 % with the
    calibrated gap, and what the calibrated threshold (chosen on other folds) gives here."""
    from kiosk.lab.open_set import measure, predicted_vs_measured, score_ours, score_peer  # noqa: PLC0415
    from kiosk.rules.identification import IDENTIFY_CALIBRATION, IdentifyCalibration  # noqa: PLC0415
    args.calibration = args.calibration or IDENTIFY_CALIBRATION
    calibration = IdentifyCalibration.load(args.calibration)
    protocol = _identify_protocols(args)
    tuned_on = set(calibration.body.get("calibration", {}).get("folds", []))
    if tuned_on & set(protocol.folds):
        raise KioskError(f"{args.calibration} was calibrated on folds {sorted(tuned_on)}: evaluate on other folds")
    engine = _engine(args)
    if not calibration.matches(engine):
        raise KioskError(f"{args.calibration} was calibrated for another model; run kiosk calibrate-identify")
    rule = calibration.rule
    scores = score_ours(engine, protocol)
    result = dict(measure(scores, rule.gap, rule.threshold), threshold=rule.threshold, **protocol.describe(),
                  missed_faces=scores.missed_faces, unreadable=scores.unreadable, model=str(args.weights))
    result["calibration"] = {k: v for k, v in calibration.body["calibration"].items() if k != "gaps_tried"}
    result["impostor_model"] = predicted_vs_measured(calibration, scores, sorted({rule.threshold, 0.5, 0.7, 0.8, 0.9}))
    rows = {"siamese": result}
    if args.peer:
        from kiosk.lab.peer import FaceRecognitionPeer  # noqa: PLC0415
        peer_scores = score_peer(FaceRecognitionPeer(), protocol)
        for gap in (0.0, 0.05):  # nearest gallery photo with a plain distance threshold; the gap of 0.05
            rows[f"face_recognition gap {gap:g}"] = dict(measure(peer_scores, gap), missed_faces=peer_scores.missed_faces)
        result["peer"] = {name: row for name, row in rows.items() if name != "siamese"}
    keys = ["rank1", "dir_at_fpir_1e-2", "dir_at_fpir_1e-3", "gap", "fpir_at_threshold", "dir_at_threshold",
            "missed_faces"]
    print(f"{'metric':<20}" + "".join(f"{n:>26}" for n in rows))
    for key in keys:
        cells = [rows[n].get(key) for n in rows]
        print(f"{key:<20}" + "".join(f"{v:>26.4f}" if isinstance(v, float) else f"{'-' if v is None else v!s:>26}"
                                     for v in cells))
    print(f"folds {protocol.folds}: gallery {result['gallery']} people (one photo each), probes {result['probes']} "
          f"({result['mated_probes']} mated, {result['non_mated_probes']} non-mated); threshold {rule.threshold:.4f} "
          f"and gap {rule.gap:g} calibrated on folds {sorted(tuned_on)}; DIR at FPIR x: threshold set on these "
          "non-mated probes, the gap kept")
    for row in result["impostor_model"]:
        print(f"  threshold {row['threshold']:.4f}: FPIR predicted for {row['gallery']} people "
              f"{row['predicted_fpir']:.4f}, measured {row['measured_fpir_with_gap']:.4f} with the gap, "
              f"{row['measured_fpir_without_gap']:.4f} without")
    _write_json(args.json, result)
    return 0


def _write_json(path: Path | None, result: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")


def cmd_calibrate_identify(args) -> int:
    from kiosk.io.files import atomic_write_text  # noqa: PLC0415
    from kiosk.lab.open_set import calibrate  # noqa: PLC0415
    from kiosk.rules.identification import IDENTIFY_CALIBRATION  # noqa: PLC0415
    refuse_shipped(args.out, IDENTIFY_CALIBRATION, args.replace_shipped)
    body = calibrate(_engine(args), _identify_protocols(args), args.target_fpir)
    atomic_write_text(args.out, json.dumps(body, indent=1) + "\n", mode=0o644)
    c = body["calibration"]
    print(f"wrote {args.out}: gap {body['rule']['gap']:g}, threshold {body['rule']['threshold']:.4f} for FPIR <= "
          f"{args.target_fpir:g} on folds {c['folds']} (gallery {c['gallery']}): FPIR {c['fpir']:.4f}, "
          f"DIR {c['dir']:.4f}, rank-1 {c['rank1']:.4f}")
    return 0


def _site_people(args):
    from kiosk.lab.datasets import parse_folds  # noqa: PLC0415
    from kiosk.lab.site_eval import lfw_fold_people, site_people  # noqa: PLC0415
    only = None
    if args.lfw_folds:
        only = lfw_fold_people(args.pairs or Path(args.root).parent / "pairs.txt", args.root, parse_folds(args.lfw_folds))
    return site_people(args.root, args.engine, args.references, args.frames, args.max_photos, only)


def _walk_up_rule(engine):
    from kiosk.rules.identification import IdentifyCalibration  # noqa: PLC0415
    calibration = IdentifyCalibration.load()
    if not calibration.matches(engine):
        raise KioskError("weights/identify.json was calibrated for another model; run kiosk calibrate-identify")
    return calibration.rule


def cmd_evaluate_site(args) -> int:
    """Whole simulated sites from a folder of people (kiosk/lab/site_eval.py), today's rule beside the site rules."""
    from kiosk.lab.site_eval import evaluate_site, print_site_report  # noqa: PLC0415
    from kiosk.rules.site import SITE_RULE_FILE, SiteRuleFile  # noqa: PLC0415
    if not 0.0 <= args.outsiders < 1.0 or args.references < 1 or args.frames < 1:
        raise KioskError("--outsiders in [0, 1), --references and --frames at least 1")
    args.engine = _engine(args)
    rule_file = SiteRuleFile.load(args.site_rule or SITE_RULE_FILE)
    if not rule_file.matches(args.engine):
        raise KioskError("the site rule was calibrated for another model; run kiosk calibrate-site")
    result = evaluate_site(args.engine, _site_people(args), rule_file.rule, _walk_up_rule(args.engine),
                           args.outsiders, args.seed)
    result.update(root=str(args.root), references=args.references, frames=args.frames, lfw_folds=args.lfw_folds)
    print_site_report(result)
    _write_json(args.json, result)
    return 0


def cmd_calibrate_site(args) -> int:
    """The site rule's numbers (insider margin, fallback threshold) on LFW folds 6-10 sites."""
    from kiosk.io.files import atomic_write_text  # noqa: PLC0415
    from kiosk.lab.datasets import parse_folds  # noqa: PLC0415
    from kiosk.lab.site_eval import calibrate_site  # noqa: PLC0415
    from kiosk.rules.identification import (
        head_parameters,  # noqa: PLC0415
        seal_calibration,  # noqa: PLC0415
    )
    from kiosk.rules.site import SITE_FORMAT, SITE_RULE_FILE  # noqa: PLC0415
    refuse_shipped(args.out, SITE_RULE_FILE, args.replace_shipped)
    if set(parse_folds(args.lfw_folds)) & {1, 2, 3, 4, 5}:
        raise KioskError("LFW folds 1-5 are for reporting only: calibrate on folds 6-10")
    args.engine = _engine(args)
    rule = calibrate_site(args.engine, _site_people(args), _walk_up_rule(args.engine), args.target_far)
    weight, bias = head_parameters(args.engine)
    body = {"format": SITE_FORMAT, "rule": rule.to_dict(), "model_id": args.engine.model_id,
            "head": {"weight": weight, "bias": bias},
            "calibration": {"lfw_folds": args.lfw_folds, "references": args.references, "frames": args.frames,
                            "max_photos": args.max_photos, "genuine_loss": 0.0025, "fallback_far": 0.001,
                            "command": "kiosk calibrate-site --out weights/site.json --replace-shipped"}}
    atomic_write_text(args.out, json.dumps(seal_calibration(body), indent=1) + "\n", mode=0o644)
    print(f"wrote {args.out}: {rule}")
    return 0


def _read_new_pin() -> tuple[str, str | None]:
    """From the terminal (hidden, twice), or, scripted, the first line of stdin (a second line must repeat it)."""
    if sys.stdin.isatty():
        import getpass  # noqa: PLC0415
        return getpass.getpass("New admin PIN: "), getpass.getpass("Repeat the new PIN: ")
    lines = sys.stdin.read().splitlines()
    return (lines[0].strip() if lines else ""), (lines[1].strip() if len(lines) > 1 else None)


def cmd_admin_reset_pin(args) -> int:
    """The only way back into a kiosk whose PIN record is lost, damaged or replaced, or that is locked out:
    for the account owning the data folder, at a terminal (not at the kiosk's screen). A fleet's PIN is the
    registry's: ``--database URL`` as the registry's owner (kiosk.storage.fleet.pin), never a kiosk's role."""
    from kiosk.app import Pins  # noqa: PLC0415
    from kiosk.paths import data_dir  # noqa: PLC0415
    from kiosk.storage.fleet.outbox import FLEET_DB_NAME  # noqa: PLC0415
    from kiosk.storage.fleet.pgconn import database_url  # noqa: PLC0415
    from kiosk.storage.fleet.pin import FLEET_RESET_COMMAND, reset_fleet_pin  # noqa: PLC0415
    from kiosk.storage.pin import check_folder_owner  # noqa: PLC0415
    url = database_url(args.database)
    if url is None and (data_dir() / FLEET_DB_NAME).is_file():
        raise KioskError(f"this kiosk belongs to a fleet: its admin PIN is the registry's, for every kiosk; run "
                         f"'{FLEET_RESET_COMMAND}' as the registry's owner")
    if url is None:
        check_folder_owner(data_dir())
    new_pin, repeat = _read_new_pin()
    if url is not None:
        reset_fleet_pin(url, new_pin, repeat)
        log.warning("the fleet's admin PIN reset from the command line")
        print("kiosk: the fleet's admin PIN set and lockouts cleared; every kiosk takes the new PIN within seconds "
              "(one that is offline when it is back)")
        return 0
    from kiosk.app import Kiosk  # noqa: PLC0415
    from kiosk.storage import StoreInUseError  # noqa: PLC0415
    try:
        kiosk = Kiosk.open()  # the writer: the reset is written to the kiosk's audit log
    except StoreInUseError as exc:
        raise KioskError(f"{exc}. Stop the kiosk first (Admin > Kiosk > Quit kiosk, or end its process), so that "
                         f"the reset goes into its audit log; then run this again") from None
    with kiosk:
        # a settings file that cannot be read: the reset is tried anyway (and says why it cannot write), always
        # with this store's places and data key, so the new guard is authenticated and the new PIN peppered
        pins = kiosk.pins or Pins(kiosk.storage.pin_manager(kiosk.settings_store), kiosk.audit)
        pins.reset(new_pin, repeat, reason="reset from the command line")
    print("kiosk: admin PIN set and lockouts cleared; the admin tab takes the new PIN from now on")
    return 0


def cmd_backup(args) -> int:
    from kiosk.storage import Storage  # noqa: PLC0415
    from kiosk.storage.backup import backup  # noqa: PLC0415
    storage = Storage.open(url=args.database)  # the writer lock: one consistent snapshot
    try:
        info = backup(storage, args.dest)
    finally:
        storage.close()
    print(f"kiosk: backup written to {info.folder} ({info.references} reference photo(s), encrypted; it is useless "
          f"without the data key, which it does not contain: keep a copy of the key apart)")
    if info.missing:
        print(f"kiosk: {len(info.missing)} photo file(s) were already missing from the data folder", file=sys.stderr)
    return 0


def cmd_restore(args) -> int:
    from kiosk.storage.backup import restore  # noqa: PLC0415
    aside = restore(args.source)
    print(f"kiosk: restored from {args.source}; the data it replaced is kept in {aside} (delete it when no "
          f"longer needed)")
    return 0


def cmd_check(args) -> int:
    from kiosk.storage import Storage  # noqa: PLC0415
    storage = Storage.open(readonly=True, url=args.database)  # may run beside the kiosk
    try:
        health = storage.health
    finally:
        storage.close()
    print(f"kiosk: {health.summary}")
    for line in health.lines():
        print(f"  {line}")
    return 0 if health.ok else EXIT_BAD_INPUT


def cmd_audit_verify(args) -> int:
    """Check the audit log's hash chain, read-only (may run beside the kiosk): 0 intact, 1 broken (the first
    broken entry named), 2 when it cannot be checked (no database, no data key)."""
    from kiosk.storage import Storage  # noqa: PLC0415
    storage = Storage.open(readonly=True, url=args.database)  # a fleet's: the registry's one chain
    try:
        broken = storage.audit.verify_chain()
        count = storage.audit.count()
    finally:
        storage.close()
    if broken is not None:
        print(f"kiosk: the audit log was altered: {broken.describe()}")
        return EXIT_AUDIT_BROKEN
    print(f"kiosk: the audit log is intact ({count} entries, hash chain verified)")
    return 0


def _key_places():
    from kiosk.storage.places import StoragePaths  # noqa: PLC0415
    return StoragePaths.resolve()


def cmd_key_status(args) -> int:
    """Where the data key is (kiosk.storage.keyproviders): nothing is asked or opened."""
    from kiosk.storage.keyproviders import describe  # noqa: PLC0415
    paths = _key_places()
    print(f"kiosk: {describe(paths.key_file, paths.data).line}")
    return 0


def cmd_key_migrate(args) -> int:
    """Move the data key to another provider; resumable (kiosk.storage.keymigration). Takes the writer lock."""
    from kiosk.paths import private_dir  # noqa: PLC0415
    from kiosk.storage import StoreInUseError  # noqa: PLC0415
    from kiosk.storage.keymigration import migrate  # noqa: PLC0415
    from kiosk.storage.lock import acquire_writer_lock  # noqa: PLC0415
    paths = _key_places()
    try:
        lock = acquire_writer_lock(private_dir(paths.data))
    except StoreInUseError as exc:
        raise KioskError(f"{exc}. Stop the kiosk first, then run this again") from None
    try:
        result = migrate(paths.key_file, args.to, paths.data, credential=args.credential)
    finally:
        lock.release()
    print(f"kiosk: the data key (ID {result.key_id}) is in {args.to} now ({paths.key_file} says where)")
    for note in result.notes:
        print(f"kiosk: {note}")
    return 0


def cmd_key_export(args) -> int:
    """The key itself, as a plain key file: to --out (a new owner-only file) or stdout (for systemd-creds)."""
    from kiosk.io.files import PRIVATE_FILE, atomic_writer  # noqa: PLC0415
    from kiosk.storage.keymigration import export_key  # noqa: PLC0415
    paths = _key_places()
    text = export_key(paths.key_file, paths.data)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        with atomic_writer(args.out, PRIVATE_FILE, replace=False) as handle:
            handle.write(text.encode("ascii"))
    except FileExistsError:
        raise KioskError(f"{args.out} exists: give a new file") from None
    print(f"kiosk: the data key written to {args.out}: keep it apart from the kiosk (it decrypts every face)",
          file=sys.stderr)
    return 0


def cmd_key_import(args) -> int:
    """Put an exported copy of the key back (a lost keyring entry, passphrase or credential)."""
    from kiosk.storage.keymigration import import_key  # noqa: PLC0415
    paths = _key_places()
    result = import_key(paths.key_file, args.copy, paths.data, args.to, credential=args.credential)
    print(f"kiosk: the data key (ID {result.key_id}) is in {result.target} ({paths.key_file} says where)")
    return 0


def cmd_registry_migrate(args) -> int:
    """Create or upgrade the fleet registry's schema in PostgreSQL (as the role that owns the database)."""
    from kiosk.storage.fleet.pgconn import ConnectionConfig, database_url  # noqa: PLC0415
    from kiosk.storage.fleet.registry import migrate  # noqa: PLC0415
    url = database_url(args.database)
    if url is None:
        raise KioskError("give the registry: --database postgresql://OWNER@HOST/DB (or KIOSK_DATABASE_URL)")
    config = ConnectionConfig.from_url(url)
    print(f"kiosk: registry {config.safe_url} at schema {migrate(config)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    lfw = datasets_dir() / "lfw"
    parser = argparse.ArgumentParser(prog="kiosk", description="Siamese Kiosk: one-shot face verification")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weights file (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to the console too")
    parser.add_argument("--database", metavar="URL", help="a fleet's shared registry, postgresql://ROLE@HOST/DB "
                        "(default: KIOSK_DATABASE_URL; unset: this kiosk's own SQLite store); the password comes from "
                        "KIOSK_DATABASE_PASSWORD or KIOSK_DATABASE_PASSWORD_FILE, never the URL")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("verify", help="are two photos the same person?")
    p.add_argument("image_a", type=Path)
    p.add_argument("image_b", type=Path)
    p.add_argument("--threshold", type=float, help="accept when P(same) >= this (default: the model's)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("evaluate", help="verification metrics on a pairs protocol")
    esub = p.add_subparsers(dest="protocol", required=True)
    for name, func in (("lfw", cmd_evaluate_lfw), ("pairs", cmd_evaluate_pairs)):
        e = esub.add_parser(name, help="LFW pairs.txt (View 2 folds)" if name == "lfw" else "a CSV left,right,same")
        if name == "lfw":
            e.add_argument("--root", type=Path, default=lfw / "lfw-deepfunneled")
            e.add_argument("--pairs", type=Path, default=lfw / "pairs.txt")
            e.add_argument("--folds", default="1-5", help="folds to evaluate, e.g. 1-5 (default) or 1-10")
        else:
            e.add_argument("--csv", type=Path, required=True)
            e.add_argument("--allow-outside", action="store_true",
                           help="read image paths outside the CSV's folder (absolute, '..', symbolic links)")
        e.add_argument("--json", type=Path, help="write the metrics to this JSON file")
        e.add_argument("--peer", action="store_true", help="also evaluate face_recognition side by side")
        e.add_argument("--peer-only", action="store_true", help="evaluate only face_recognition")
        e.set_defaults(func=func)

    def lfw_people(parser, folds: str, folds_help: str) -> None:
        """The open-set protocol's LFW folder, pairs file and folds (kiosk/lab/open_set.py)."""
        parser.add_argument("--root", type=Path, default=lfw / "lfw-deepfunneled")
        parser.add_argument("--pairs", type=Path, default=lfw / "pairs.txt")
        parser.add_argument("--folds", default=folds, help=folds_help)

    e = esub.add_parser("identify", help="open-set identification (1:N) on LFW folds (gallery, mated and "
                                         "non-mated probes; kiosk/lab/open_set.py)")
    lfw_people(e, "1-5", "folds whose people make the protocol (default 1-5)")
    e.add_argument("--calibration", type=Path, help="the 1:N rule (default: the shipped weights/identify.json)")
    e.add_argument("--json", type=Path, help="write the metrics to this JSON file")
    e.add_argument("--peer", action="store_true", help="also evaluate face_recognition on the same gallery and probes")
    e.set_defaults(func=cmd_evaluate_identify)

    e = esub.add_parser("liveness", help="presentation-attack detection on a CSV path,label[,attempt] (1 = live)")
    e.add_argument("--csv", type=Path, required=True)
    e.add_argument("--json", type=Path, help="write the figures to this JSON file")
    e.add_argument("--liveness-weights", type=Path, default=LIVENESS_WEIGHTS)
    e.set_defaults(func=cmd_evaluate_liveness)

    p = sub.add_parser("train-liveness", help="train the liveness detector, leave-one-person-out (NUAA by default)")
    p.add_argument("--csv", type=Path, default=datasets_dir() / "nuaa" / "labels.csv")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--replace-shipped", action="store_true", help="allow --out to be the shipped detector")
    p.add_argument("--crop-scale", type=float, default=1.0, help="face crop size in Haar boxes (default 1.0)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.set_defaults(func=cmd_train_liveness)

    p = sub.add_parser("calibrate", help="a new default threshold for --weights at another false-accept rate "
                                         "(on the validation pairs the weights name; the head is unchanged)")
    p.add_argument("--target-far", type=float, default=0.01, help="false accepts allowed on validation pairs")
    p.add_argument("--lfw-root", type=Path, default=lfw / "lfw-deepfunneled")
    p.add_argument("--pairs", type=Path, default=lfw / "pairs.txt")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--replace-shipped", action="store_true", help="allow --out to be the shipped weights file")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("calibrate-identify", help="choose the 1:N rule (gap, threshold) on LFW folds 6-10 and store "
                                                  "it with the impostor statistics")
    lfw_people(p, "6-10", "folds whose people calibrate (never the reported 1-5)")
    p.add_argument("--target-fpir", type=float, default=1e-3, help="non-mated walk-ups accepted at most")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--replace-shipped", action="store_true", help="allow --out to be the shipped calibration")
    p.set_defaults(func=cmd_calibrate_identify)

    def site_args(parser, root: Path, lfw_folds: str | None) -> None:
        parser.add_argument("--root", type=Path, default=root, help="one folder per person (default: %(default)s)")
        parser.add_argument("--references", type=int, default=1, help="enrolled photos per person (the first ones)")
        parser.add_argument("--frames", type=int, default=3, help="camera frames per attempt")
        parser.add_argument("--max-photos", type=int, default=100, help="photos read per person at most (LFW has a few people with hundreds)")
        parser.add_argument("--lfw-folds", default=lfw_folds, help="only the people of these LFW folds (pairs.txt)")
        parser.add_argument("--pairs", type=Path, help="LFW pairs.txt for --lfw-folds (default: beside --root)")

    e = esub.add_parser("site", help="whole simulated sites from a folder of people: genuine, insider (a colleague's "
                                     "ID), outsider (not enrolled) and walk-up figures, today's rule beside the site's")
    site_args(e, datasets_dir() / "nuaa" / "live", None)
    e.add_argument("--outsiders", type=float, default=0.2, help="fraction of people never enrolled at each site")
    e.add_argument("--seed", type=int, default=0, help="the permutation that picks the outsiders")
    e.add_argument("--site-rule", type=Path, help="the site rule (default: the shipped weights/site.json)")
    e.add_argument("--json", type=Path, help="write the figures to this JSON file")
    e.set_defaults(func=cmd_evaluate_site)

    p = sub.add_parser("calibrate-site", help="the site rule's insider margin and fallback on LFW folds 6-10 sites")
    site_args(p, lfw / "lfw-deepfunneled", "6-10")
    p.add_argument("--target-far", type=float, default=0.01, help="the site threshold's false accepts per pair")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--replace-shipped", action="store_true", help="allow --out to be the shipped site rule")
    p.set_defaults(func=cmd_calibrate_site)

    p = sub.add_parser("train", help="train the Siamese head on the pretrained twin encoder")
    p.add_argument("--data", type=Path, action="append", help="identity folder root (repeatable; default: LFW + CelebA subset)")
    p.add_argument("--lfw-root", type=Path, default=lfw / "lfw-deepfunneled")
    p.add_argument("--pairs", type=Path, default=lfw / "pairs.txt")
    p.add_argument("--exclude-folds", default="1-5", help="LFW folds whose people are never trained on (reported)")
    p.add_argument("--validation-folds", default="6-10", help="LFW folds held out for the choice and the threshold")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--replace-shipped", action="store_true", help="allow --out to be the shipped weights file")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("admin", help="administration from a terminal")
    asub = p.add_subparsers(dest="admin_command", required=True)
    a = asub.add_parser("reset-pin", help="set a new admin PIN and clear lockouts (owner of the data folder only; "
                                          "a fleet's: --database URL as the registry's owner; reads the PIN from "
                                          "the terminal, or the first line of stdin)")
    a.set_defaults(func=cmd_admin_reset_pin)

    p = sub.add_parser("backup", help="write the database and photos, as one consistent snapshot, to a new folder "
                                      "(needs the data folder free: close the kiosk first)")
    p.add_argument("dest", type=Path, help="a new (or empty) folder")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="replace the data folder's database and photos with a backup (the "
                                       "replaced data is kept aside)")
    p.add_argument("source", type=Path, help="a folder written by 'kiosk backup'")
    p.set_defaults(func=cmd_restore)
    p = sub.add_parser("check", help="verify the store (database, every feature vector and photo); read-only, "
                                     "exit 0 when sound, 2 when damaged")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("audit", help="the audit log")
    asub = p.add_subparsers(dest="audit_command", required=True)
    a = asub.add_parser("verify", help="check the audit log's hash chain; read-only: exit 0 when intact, 1 with the "
                                       "first broken entry named")
    a.set_defaults(func=cmd_audit_verify)
    p = sub.add_parser("key", help="where the data key is kept (a plain file, the OS keyring, a passphrase, a "
                                   "systemd credential)")
    ksub = p.add_subparsers(dest="key_command", required=True)
    k = ksub.add_parser("status", help="where the key is, and what a copy of the disk would give away")
    k.set_defaults(func=cmd_key_status)
    k = ksub.add_parser("migrate", help="move the key to another provider (resumable: run it again after an "
                                        "interruption; needs the data folder free: close the kiosk first)")
    k.add_argument("--to", required=True, choices=["file", "keyring", "passphrase", "systemd"])
    k.add_argument("--credential", default="siamese-kiosk-data-key", help="the systemd credential's name")
    k.set_defaults(func=cmd_key_migrate)
    k = ksub.add_parser("export", help="write the key itself (a plain key file) for a copy kept apart; stdout "
                                       "without --out (e.g. into systemd-creds encrypt)")
    k.add_argument("--out", type=Path, help="a new file (owner-only)")
    k.set_defaults(func=cmd_key_export)
    k = ksub.add_parser("import", help="put an exported copy of the key back where the key file says (or --to)")
    k.add_argument("copy", type=Path, help="a file written by 'kiosk key export'")
    k.add_argument("--to", choices=["file", "keyring", "passphrase", "systemd"])
    k.add_argument("--credential", default="siamese-kiosk-data-key", help="the systemd credential's name")
    k.set_defaults(func=cmd_key_import)
    p = sub.add_parser("registry", help="the fleet registry in PostgreSQL (--database)")
    rsub = p.add_subparsers(dest="registry_command", required=True)
    r = rsub.add_parser("migrate", help="create or upgrade its schema (run as the role that owns the database)")
    r.set_defaults(func=cmd_registry_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    previous_umask = os.umask(0o077)  # whatever a command writes (caches, checkpoints, results) is owner-only
    try:
        return _main(argv)
    finally:
        os.umask(previous_umask)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from kiosk.logging_setup import setup_logging  # noqa: PLC0415
        setup_logging(console=args.verbose)
    except ImportError:
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except WeightsError as exc:
        print(f"kiosk: {exc}", file=sys.stderr)
        return EXIT_NO_WEIGHTS
    except (FaceNotUsableError, KioskError) as exc:
        print(f"kiosk: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModuleNotFoundError as exc:
        if exc.name not in LAB_MODULES:
            raise
        print(f"kiosk: this command needs the lab extra ({exc.name} is not installed): "
              f"pip install 'siamese-kiosk[lab]'", file=sys.stderr)
        return EXIT_BAD_INPUT


LAB_MODULES = ("tqdm",)  # the lab extra's (pyproject.toml): evaluation and training only


if __name__ == "__main__":
    sys.exit(main())
