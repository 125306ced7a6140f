"""``secagg run --engine flower-local``: a whole Flower deployment as local processes.

Starts, each as its own process group bound to 127.0.0.1 only (insecure mode: no
TLS on the loopback interface):

- one ``flower-superlink`` (it runs our ServerApp in a ``flwr-serverapp`` subprocess),
- one ``flower-supernode`` per client, told its party, key file, state directory,
  data and federation policy (``policy.json``, see :mod:`.policy`) by ``--node-config``,

then submits the Flower App (``training/flower/app``) with ``flwr run`` and streams
its log until the run ends. Every process it started is stopped afterwards — also
on an error, a timeout or Ctrl-C — first with SIGTERM to its process group, then
SIGKILL after a grace period.

Layout under the run directory: ``keys/`` (each party's 0600 key file, generated
here because every party is local), ``roster.json`` (their public keys),
``policy.json`` (the policy every node checks the server's requests against),
``flower-run.json`` (the server's spec), ``flower/`` (logs, each node's state
directory and Flower home).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from secagg.errors import SecAggError
from secagg.identity import PartyKeys, Roster
from secagg.protocol import PartyId, client_id, holder_id
from secagg.rand import SystemRng
from secagg_training.config import FederationConfig
from secagg_training.flower.policy import policy_document
from secagg_training.flower.server_app import ERROR_FILE, FlowerSpec, check_flower_config

APP_DIR = Path(__file__).resolve().parent / "app"
HOST = "127.0.0.1"
STOP_GRACE_SECONDS = 5.0
READY_TIMEOUT_SECONDS = 60.0


class FlowerLocalError(SecAggError):
    """The local Flower deployment could not run the federation (see its logs)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FlowerLocalError(f"flower-superlink must start; it exited ({process.returncode})")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.2)
    raise FlowerLocalError(f"flower-superlink must listen on {HOST}:{port} within {timeout:.0f} s")


def party_keys_path(run_dir: Path, party: PartyId) -> Path:
    return run_dir / "keys" / (party.replace("/", "_") + ".key")


def write_policy(run_dir: Path, config: FederationConfig) -> Path:
    """The federation policy every node of this deployment agrees to (``policy.json``):
    flower-local knows the config, as hospitals would agree on it out of band."""
    from secagg_training.data import load_digits_data
    from secagg_training.federation import declared_nominal_records

    data = load_digits_data(seed=config.seed)
    document = policy_document(
        config,
        nominal_records=declared_nominal_records(config, data),
        # the mean record count: weights records / mean, as the in-process FedAvg
        weight_unit=len(data.y_train) / config.clients,
    )
    path = run_dir / "policy.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def ensure_keys(run_dir: Path, parties: list[PartyId]) -> Roster:
    """Each party's key file (made once, 0600) and the roster of their public keys."""
    (run_dir / "keys").mkdir(mode=0o700, exist_ok=True)
    keys = []
    for party in parties:
        path = party_keys_path(run_dir, party)
        if not path.exists():
            PartyKeys.generate(party, rng=SystemRng()).save(path)
        keys.append(PartyKeys.load(path).public)
    roster = Roster(keys)
    roster.save(run_dir / "roster.json")
    return roster


@dataclasses.dataclass
class LocalDeployment:
    """The processes of one local Flower deployment; use as a context manager."""

    run_dir: Path
    parties: list[PartyId]
    insecure_seed: int | None = None
    processes: dict[str, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)
    tracked: dict[int, int | None] = dataclasses.field(default_factory=dict)
    port: int = 0

    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def root(self) -> Path:
        return self.run_dir / "flower"

    def env(self, home: Path) -> dict[str, str]:
        env = dict(os.environ)
        # every process imports the installed secagg_* packages of this interpreter's venv
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["FLWR_HOME"] = str(home)
        env["OMP_NUM_THREADS"] = "1"  # many small processes share the cores
        env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")  # Flower's default: 1 s
        home.mkdir(parents=True, exist_ok=True)
        return env

    def _spawn(self, name: str, argv: list[str], home: Path) -> subprocess.Popen[bytes]:
        log = open(self.root / "logs" / f"{name.replace('/', '_')}.log", "ab")  # noqa: SIM115
        try:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env(home),
                cwd=self.root,
                start_new_session=True,  # its own process group: stop() reaches its children
            )
        finally:
            log.close()
        self.processes[name] = process
        return process

    def start(self) -> None:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        superlink = self._spawn(
            "superlink",
            [
                "flower-superlink",
                "--insecure",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--disable-runtime-dependency-installation",
            ],
            self.root / "home" / "superlink",
        )
        _wait_for_port(self.port, READY_TIMEOUT_SECONDS, superlink)
        for party in self.parties:
            self.start_node(party)

    def start_node(self, party: PartyId) -> None:
        stem = party.replace("/", "_")
        state = self.root / "nodes" / stem
        node_config = {
            "party": party,
            "key-file": str(party_keys_path(self.run_dir, party)),
            "state-dir": str(state),
            "data": "digits",
            "roster": str((self.run_dir / "roster.json").resolve()),
            "policy": str((self.run_dir / "policy.json").resolve()),
        }
        if self.insecure_seed is not None:
            node_config["insecure-seed"] = str(self.insecure_seed)
        pairs = " ".join(
            f"{k}={json.dumps(v) if k != 'insecure-seed' else v}" for k, v in node_config.items()
        )
        self._spawn(
            party,
            [
                "flower-supernode",
                "--insecure",
                "--superlink",
                f"{HOST}:{self.port}",
                "--host",
                HOST,
                "--port",
                str(_free_port()),
                "--node-config",
                pairs,
            ],
            state / "home",
        )

    def track(self) -> None:
        """Remember every descendant now: Flower detaches some of its own subprocesses
        (the SuperLink's SuperExec runs in a new session), so process groups miss them."""
        for process in self.processes.values():
            for pid in descendants(process.pid):
                self.tracked.setdefault(pid, start_time(pid))

    def _kill_tracked(self, sig: int) -> None:
        for pid, started in list(self.tracked.items()):
            if start_time(pid) == started:  # the same process, not a reused pid
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    def alive(self) -> list[int]:
        """Pids started here (directly or by Flower) that still run (zombies count as gone)."""
        out = [p.pid for p in self.processes.values() if p.poll() is None]
        out += [pid for pid, t in self.tracked.items() if start_time(pid) == t and t is not None]
        return out

    def kill(self, name: str) -> None:
        """SIGKILL one process and everything it started, now (tests: a crash)."""
        process = self.processes[name]
        doomed = descendants(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=STOP_GRACE_SECONDS)

    def stop(self) -> None:
        """SIGTERM everything started here, then SIGKILL what is left; reap all; bounded."""
        self.track()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        self._kill_tracked(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        self.track()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_GRACE_SECONDS)
        self._kill_tracked(signal.SIGKILL)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self.alive():
            if time.monotonic() > deadline:
                raise FlowerLocalError("every started process must stop; some did not")
            time.sleep(0.1)

    def submit(self, *, timeout: float, log: Callable[[str], Any] = print) -> None:
        """``flwr run`` the app against this SuperLink and wait (bounded) until it ends."""
        home = self.root / "home" / "cli"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "local"\n\n'
            f'[superlink.local]\naddress = "{HOST}:{self.port}"\ninsecure = true\n'
        )
        argv = [
            "flwr",
            "run",
            str(APP_DIR),
            "local",
            "--run-config",
            f"run-dir={json.dumps(str(self.run_dir.resolve()))}",
            "--stream",
        ]
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(home),
            cwd=self.root,
            start_new_session=True,
        )
        self.processes["flwr-run"] = process
        timer = threading.Timer(timeout, lambda: _killpg(process))
        timer.start()
        try:
            with open(self.root / "logs" / "flwr-run.log", "ab") as sink:
                assert_stream = process.stdout
                for raw in iter(assert_stream.readline, b"") if assert_stream else []:
                    self.track()
                    sink.write(raw)
                    line = raw.decode(errors="replace").strip()
                    if "secagg:" in line:
                        log(line[line.index("secagg:") :])
            process.wait()
        finally:
            timer.cancel()
        if process.returncode == -signal.SIGKILL:
            raise FlowerLocalError(f"the Flower run must finish within {timeout:.0f} s; it did not")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields


def start_time(pid: int) -> int | None:
    """A live process's start time (clock ticks since boot): tells a reused pid apart."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` in the process tree (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def _killpg(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM to the launcher unwinds like Ctrl-C, so every process gets stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def prepare(
    config: FederationConfig,
    run_dir: Path,
    *,
    resume: bool,
    insecure_seed: int | None = None,
    train_timeout: float = 180.0,
    phase_timeout: float = 60.0,
) -> list[PartyId]:
    """Keys, roster and the server's spec in ``run_dir``; returns the parties to start."""
    check_flower_config(config)
    parties = [client_id(i) for i in range(config.clients)]
    if config.scheme == "ckks":  # the decryption committee: one SuperNode per key holder
        parties += [holder_id(i) for i in range(config.committee)]
    ensure_keys(run_dir, parties)
    write_policy(run_dir, config)
    if not resume:
        FlowerSpec(
            config=config.to_dict(),
            roster=str((run_dir / "roster.json").resolve()),
            train_timeout=train_timeout,
            phase_timeout=phase_timeout,
            insecure_seed=insecure_seed,
        ).save(run_dir)
    for stale in (run_dir / ERROR_FILE, run_dir / "result.json"):
        stale.unlink(missing_ok=True)
    return parties


def collect(run_dir: Path) -> dict[str, Any]:
    """result.json of a finished Flower run, or the error its ServerApp left."""
    error = run_dir / ERROR_FILE
    if error.exists():
        raise FlowerLocalError(f"the ServerApp failed: {error.read_text().strip()}")
    try:
        document: dict[str, Any] = json.loads((run_dir / "result.json").read_text())
    except OSError:
        raise FlowerLocalError(
            "the Flower run must write result.json; it did not "
            f"(logs: {run_dir / 'flower' / 'logs'})"
        ) from None
    return document


def run_flower_local(
    config: FederationConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    log: Callable[[str], Any] = print,
    timeout: float = 3600.0,
    insecure_seed: int | None = None,
    train_timeout: float = 180.0,
    phase_timeout: float = 60.0,
) -> dict[str, Any]:
    """Run (or resume) the federation on local Flower processes; returns result.json.

    Every process started is stopped before this returns or raises.
    """
    parties = prepare(
        config,
        run_dir,
        resume=resume,
        insecure_seed=insecure_seed,
        train_timeout=train_timeout,
        phase_timeout=phase_timeout,
    )
    with _sigterm_as_interrupt(), LocalDeployment(run_dir, parties, insecure_seed) as deployment:
        log(f"flower-local: SuperLink on {HOST}:{deployment.port}, {len(parties)} SuperNodes")
        deployment.submit(timeout=timeout, log=log)
    return collect(run_dir)
