"""The node configuration: one TOML file, one frozen dataclass per section.

Every key is declared with :func:`~qkdnode.node.config.fields.setting`, which carries its
documentation and check; ``qkdnode config schema`` prints them all. To extend the schema, add
a dataclass here (or in the module that owns the part) and a field that holds it.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from qkdnode.drivers.sim.params import (
    BenchParams,
    DetectorParams,
    FibreParams,
    ReceiverParams,
    SourceParams,
    TaggerParams,
)

from .fields import (
    between,
    host_port,
    matches,
    multiple_of,
    non_empty,
    positive,
    probability,
    resource_url,
    setting,
)

__all__ = [
    "ROLES",
    "BenchConfig",
    "DecoyConfig",
    "DistillationConfig",
    "InstrumentConfig",
    "KeyManagerConfig",
    "LinkConfig",
    "NodeConfig",
    "NodeIdentity",
    "PeerConfig",
    "TlsConfig",
]

# Instrument roles of ARCHITECTURE.md ("Roles the node needs").
Role = Literal[
    "time_tagger",
    "detector",
    "transmitter",
    "frame_streamer",
    "receiver",
    "bias_controller",
    "attenuator",
    "power_meter",
    "random_source",
]
ROLES: tuple[str, ...] = typing.get_args(Role)

_NAME = matches(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
                "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
# Above 11 % QBER no one-way BB84 post-processing yields key (Shor-Preskill bound).
MAX_QBER_ABORT = 0.11
# A block's time limit: the protocol's default (DEFAULT_BLOCK_TIMEOUT_S of
# qkdnode.node.protocol.qdist.events; a minute: a stalled peer or channel); at least
# a second (a block's dialogue takes several round trips and decoding), at most a day (the
# secret key and the choices of a block are held in memory until it ends).
DEFAULT_BLOCK_TIMEOUT_S = 60.0
MIN_BLOCK_TIMEOUT_S = 1.0
MAX_BLOCK_TIMEOUT_S = 86_400.0
# Where blind reconciliation starts a frame: START_QUANTILE of qkdnode.dsp.reconcile.history
# (not imported: the configuration loads without numba; a test keeps the two equal).
DEFAULT_START_QUANTILE = 0.2


def _sim_bench(resource: str | None) -> str | None:
    """The bench of a ``sim://BENCH/INSTRUMENT`` resource (None for other schemes)."""
    if resource is None or not resource.startswith("sim://"):
        return None
    return resource[len("sim://"):].split("/", 1)[0]


def _unique(items: tuple[Any, ...], attr: str, section: str) -> Iterator[tuple[Any, str]]:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        name = getattr(item, attr)
        if name in seen:
            yield (section, i, attr), f"duplicate {attr} {name!r} (also {section}[{seen[name]}])"
        seen[name] = i


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """Who this node is."""

    name: str = setting("Node name, unique in the network (used in logs, key IDs, Kx).",
                        check=_NAME)
    kme_id: str | None = setting(
        "Key management entity ID announced through ETSI GS QKD 014; defaults to the node name.",
        default=None, check=non_empty)
    site: str = setting("Free text: where the node is (lab, building, rack).", default="")


@dataclass(frozen=True, slots=True)
class InstrumentConfig:
    """One instrument: its role, its driver and how to reach it."""

    name: str = setting("Instrument name, unique in this file; links refer to it.", check=_NAME)
    role: Role = setting("What the node uses it for: " + ", ".join(ROLES) + ".")
    driver: str = setting(
        "Driver name, vendor.model (for example 'idq.id1000', 'thorlabs.pm100').",
        check=matches(r"[a-z0-9_]+(\.[a-z0-9_]+)+", "vendor.model in lower case"))
    resource: str | None = setting(
        "Resource URL: visa://RESOURCE, serial://PORT?baudrate=N, lib://PATH?device=N or "
        "sim://BENCH/INSTRUMENT; needed by every driver that reaches an instrument.",
        default=None, check=resource_url)
    timeout_s: float = setting("I/O timeout for one exchange.", default=2.0,
                               check=between(0.0, 600.0, low_open=True), unit="s")
    settings: dict[str, Any] = setting(
        "Driver-specific settings (a table), checked by the driver when it opens.",
        default_factory=dict)


@dataclass(frozen=True, slots=True)
class DecoyConfig:
    """Decoy-state BB84 source settings (Lim et al., PRA 89, 022307, 2014)."""

    mu1: float = setting("Signal intensity, mean photons per pulse.", default=0.5,
                         check=between(0.0, 2.0, low_open=True))
    mu2: float = setting("Decoy intensity.", default=0.1, check=between(0.0, 2.0, low_open=True))
    mu3: float = setting("Vacuum-like decoy intensity (>= 0).", default=2e-4,
                         check=between(0.0, 2.0))
    p_mu1: float = setting("Probability of sending mu1.", default=0.7, check=probability)
    p_mu2: float = setting("Probability of sending mu2 (mu3 takes the rest).", default=0.2,
                           check=probability)
    q_x: float = setting("Probability of the X (key) basis, at both ends.", default=0.9,
                         check=probability)

    def validate(self) -> Iterator[tuple[str, str]]:
        if not self.mu1 > self.mu2 + self.mu3:
            yield "mu1", f"must exceed mu2 + mu3 = {self.mu2 + self.mu3:g} (Lim et al. 2014)"
        if not self.mu2 > self.mu3:
            yield "mu2", f"must exceed mu3 = {self.mu3:g}"
        if not self.p_mu1 + self.p_mu2 < 1.0:
            yield "p_mu2", "p_mu1 + p_mu2 must be < 1 so that mu3 is sent too"


# Frame lengths of the LDPC code families shipped in qkdnode/dsp/codes.
SHIPPED_CODE_LENGTHS = (16_000, 64_000, 192_000)


@dataclass(frozen=True, slots=True)
class DistillationConfig:
    """Key distillation settings of one link."""

    # Keys of older files and what replaced them (the loader names the replacement).
    REMOVED_KEYS: ClassVar[dict[str, str]] = {
        "block_bits": "no longer a key: a block is a number of slots, set by block_slots in "
                      "[[links]] (the module never used block_bits); the sifted X bits of a "
                      "block are about block_slots x the X-basis detection probability per "
                      "slot (see a block's n_x in the audit log, or 'qkdnode keyrate')",
    }

    eps_cor: float = setting("Correctness parameter epsilon_cor.", default=1e-15,
                             check=probability)
    eps_sec: float | None = setting(
        "Secrecy parameter epsilon_sec; give it or kappa, not both "
        "(default 1e-10 when neither is given).", default=None, check=probability)
    kappa: float | None = setting(
        "Secrecy per key bit: epsilon_sec = kappa * key length (Lim et al. 2014).",
        default=None, check=probability)
    qber_abort: float = setting("Abort a block whose QBER estimate exceeds this.",
                                default=MAX_QBER_ABORT,
                                check=between(0.0, MAX_QBER_ABORT, low_open=True))
    code_length: int | None = setting(
        "LDPC frame length of the shipped code family (16000, 64000 or 192000): a block's "
        "sifted X bits are cut into frames of this length, so choose one well below a "
        "block's sifted bits; default: the family's default length.", default=None,
        check=lambda n: None if n in SHIPPED_CODE_LENGTHS else
        f"must be one of {', '.join(map(str, SHIPPED_CODE_LENGTHS))}")

    block_timeout_s: float = setting(
        "Abort a block (no key from it; the reason in the audit log) that has not ended this "
        "long after its start: a stalled partner or channel. A block of 10^6 sifted bits "
        "takes a few seconds of decoding on one core; each end applies its own.",
        default=DEFAULT_BLOCK_TIMEOUT_S,
        check=between(MIN_BLOCK_TIMEOUT_S, MAX_BLOCK_TIMEOUT_S), unit="s")
    start_quantile: float = setting(
        "Transmitter: where each reconciliation frame starts, as a quantile of the thresholds "
        "of recent frames: higher starts above more of them (fewer decoding rounds, a little "
        "more disclosed). Measured on 4 Mbit blocks at QBER 2 %: 0.2 f 1.092, 74 decoder "
        "iterations per frame; 0.5 f 1.095, 56; 0.8 f 1.105, 35.", default=DEFAULT_START_QUANTILE,
        check=between(0.0, 1.0, low_open=True, high_open=True))

    def validate(self) -> Iterator[tuple[str, str]]:
        if self.eps_sec is not None and self.kappa is not None:
            yield "kappa", "give eps_sec or kappa, not both"

    @property
    def effective_eps_sec(self) -> float | None:
        """epsilon_sec when fixed; None when it follows from kappa."""
        if self.kappa is not None:
            return None
        return 1e-10 if self.eps_sec is None else self.eps_sec


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """One QKD link: this node's QKD module and its partner at the peer."""

    name: str = setting("Link name, unique in this file.", check=_NAME)
    peer: str = setting("Name of the peer node at the other end (one of [[peers]]).")
    role: Literal["transmitter", "receiver"] = setting("This end's role: Alice or Bob.")
    instruments: tuple[str, ...] = setting(
        "Names of the instruments this module drives (from [[instruments]]).",
        default=(), check=None)
    pulse_rate_hz: float = setting("Transmitter pulse (slot) rate.", default=1e9,
                                   check=between(1e3, 1e11), unit="Hz")
    decoy: DecoyConfig = setting("Decoy-state source settings.", default=DecoyConfig())
    distillation: DistillationConfig = setting("Distillation settings.",
                                               default=DistillationConfig())
    qdist_listen: str | None = setting(
        "Transmitter: where this module accepts its partner's Qdist (classical channel) "
        "connection, HOST:PORT.", default=None, check=host_port)
    qdist_connect: str | None = setting(
        "Receiver: the partner module's Qdist address, HOST:PORT.", default=None,
        check=host_port)
    auth_secret_file: Path | None = setting(
        "Pre-shared secret authenticating the first Qdist frames (binary; the same file at "
        "both ends; at least 2064 bytes, 16 plus a multiple of 16; keep it private). Needed "
        "to run the module.", default=None)
    audit_log: Path | None = setting(
        "Per-block audit log (JSON lines, no key material); default audit-<link>.jsonl beside "
        "this file.", default=None)
    block_slots: int = setting(
        "Slots per block: the transmitter loads a fresh random frame of this many slots per "
        "block; both ends number blocks by slot (block b = slots b*N .. (b+1)*N - 1).",
        default=1 << 24, check=multiple_of(1 << 10), unit="slots")
    timing_slots: int = setting(
        "Length of the public timing pattern Qsync correlates against (one slot in 8 at mu1); "
        "divides block_slots and spans more than twice the 1 ms clock-offset window.",
        default=1 << 22, check=multiple_of(1 << 10), unit="slots")
    slot_delay_ps: float = setting(
        "Receiver: expected time of the first slot of a run after the start marker's tag (the "
        "optical path, source to detector output, minus the marker's cable and electronics); "
        "Qsync searches +-1 ms around it.", default=0.0, check=between(-1e12, 1e12), unit="ps")
    marker_channel: int | None = setting(
        "Receiver: the time tagger channel the transmitter's frame streamer marker output is "
        "cabled to; its pulse at the first slot of a run is slot 0's origin (the tagger's "
        "clock has none in common with the transmitter). Needed with a real tagger; on the "
        "simulated bench, default: the bench's [bench.tagger] marker_channel.", default=None,
        check=between(-32767, 32767))
    marker_timeout_s: float = setting(
        "Receiver: how long the start marker may take once the transmitter said its output "
        "started; then the module stops with an error naming the channel.", default=30.0,
        check=between(0.1, 3600.0), unit="s")
    lock_timeout_s: float = setting(
        "Receiver: how long Qsync may hold no lock after the start marker (or after a loss of "
        "lock) while detections keep coming (32768 without a slot) before the receiver arms "
        "anew, so that the transmitter starts a new run with a new marker (a marker that was "
        "not this run's, or a clock step beyond Qsync's window, is not recovered otherwise); "
        "0: never.", default=60.0, check=between(0.0, 86400.0), unit="s")

    def validate(self) -> Iterator[tuple[str, str]]:
        if self.block_slots % self.timing_slots:
            yield "block_slots", f"must be a multiple of timing_slots ({self.timing_slots})"
        if self.role == "transmitter" and self.qdist_connect is not None:
            yield "qdist_connect", "a transmitter listens (qdist_listen); it does not connect"
        if self.role == "receiver" and self.qdist_listen is not None:
            yield "qdist_listen", "a receiver connects (qdist_connect); it does not listen"
        if self.role == "transmitter" and self.marker_channel is not None:
            yield "marker_channel", ("a transmitter has no tagger: the marker channel is the "
                                     "receiver's setting")


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS material (PEM files); relative paths are relative to the configuration file."""

    ca: Path = setting("CA certificate(s) that issue the certificates of peers and SAEs.")
    cert: Path = setting("This node's certificate.")
    key: Path = setting("This node's private key.")


@dataclass(frozen=True, slots=True)
class VendorLinkConfig:
    """A commercial QKD pair whose ETSI GS QKD 014 interface feeds this key manager."""

    peer: str = setting("The node at the other end of the vendor's link (one of [[peers]]).")
    url: str = setting("The vendor box's ETSI 014 base URL, e.g. https://qkd-a.lab:443.",
                       check=matches(r"https://\S+", "an https:// URL"))
    partner_sae: str = setting("The SAE ID the vendor boxes know the other end's key manager "
                               "by.", check=non_empty)
    role: Literal["master", "slave"] = setting(
        "master pulls keys with enc_keys; slave collects the same keys with dec_keys.")
    tls: TlsConfig = setting("TLS towards the box: its CA, our client certificate and key.")
    key_size_bits: int = setting("Key size asked of the box.", default=256,
                                 check=multiple_of(8), unit="bits")
    target_keys: int = setting("The master keeps this many keys in the pool.", default=1000,
                               check=positive)


@dataclass(frozen=True, slots=True)
class KeyManagerConfig:
    """The embedded key management daemon."""

    store_path: Path = setting("Key store (SQLite file); relative to the configuration file.",
                               default=Path("keys.sqlite"))
    etsi014_listen: str = setting("ETSI GS QKD 014 (HTTPS) listen address, HOST:PORT.",
                                  default="127.0.0.1:8443", check=host_port)
    kx_listen: str = setting("Kx (peer key managers, TLS) listen address, HOST:PORT.",
                             default="0.0.0.0:9443", check=host_port)
    management_listen: str = setting("Metrics and status (HTTP) listen address, HOST:PORT.",
                                     default="127.0.0.1:9100", check=host_port)
    management_token_file: Path | None = setting(
        "File the key manager writes a fresh random bearer token to at each start (mode 0600); "
        "management requests that need it (see management_auth) carry it as 'Authorization: "
        "Bearer TOKEN', and qkdnode commands read it from here. Default: beside the key store, "
        "named after it (keys.sqlite -> keys.token); relative to the configuration file.",
        default=None)
    management_auth: Literal["control", "all"] = setting(
        "Management requests that need the token: 'control' (POST: stopping and starting "
        "modules; /status and /metrics stay readable for monitoring and Prometheus) or 'all'.",
        default="control")
    key_size_bits: int = setting("Default key size served to applications.", default=256,
                                 check=multiple_of(8), unit="bits")
    max_key_count: int = setting("Capacity: keys kept per peer before intake pauses.",
                                 default=100_000, check=positive)
    wipe_delay_s: float = setting(
        "Longest time destroyed key bytes may stay in the store's WAL file before it is "
        "truncated (0: after every transaction; a little more lets a busy node truncate once "
        "for many).", default=0.2, check=between(0.0, 5.0), unit="s")
    link_key_confirm_s: float = setting(
        "Link keys from the node's QKD modules wait, unusable, until the peer's key manager "
        "confirms it holds them too; those not confirmed within this time are destroyed (a "
        "block that finished at one end only, e.g. when the Qdist connection dropped at its "
        "end, leaves such keys).", default=86_400.0, check=between(60.0, 30 * 86_400.0),
        unit="s")
    kq1_socket: Path = setting("Kq-1 socket (Unix) the node's QKD modules push keys to; "
                               "relative to the configuration file.",
                               default=Path("kq1.sock"))
    vendor_links: tuple[VendorLinkConfig, ...] = setting(
        "Vendor QKD pairs feeding this key manager ([[key_manager.vendor_links]]).",
        default=())
    saes: dict[str, str] = setting(
        "Applications: SAE ID (the CN of its client certificate) -> the node it is attached "
        "to (this node, a peer, or a node reached by key relay).", default_factory=dict)
    tls: TlsConfig | None = setting("TLS material; required to serve keys.", default=None)


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """Another node this node speaks Kx with."""

    name: str = setting("The peer's node name.", check=_NAME)
    kx_address: str = setting("The peer's Kx address, HOST:PORT.", check=host_port)
    kme_id: str | None = setting("The peer's KME ID; defaults to its name.", default=None,
                                 check=non_empty)


def _service_address(value: str) -> str | None:
    """``HOST:PORT`` or ``unix:PATH``."""
    if value.startswith("unix:"):
        return None if value[len("unix:"):] else "must name a socket path after 'unix:'"
    return host_port(value)


# The bench's seed goes to numpy's SeedSequence, which takes any non-negative integer; TOML
# integers are signed 64-bit.
MAX_SEED = 2**63 - 1
_CLASS_FIELD = re.compile(r"^(\w+)\.(\w+): (.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """The simulated optical bench that ``sim://BENCH/INSTRUMENT`` resources reach.

    Every physical parameter of :class:`~qkdnode.drivers.sim.params.BenchParams`, with its
    documentation, unit and check taken from there.
    """

    name: str = setting("Bench name: the BENCH of sim://BENCH/INSTRUMENT resource URLs.",
                        default="bench", check=_NAME)
    seed: int = setting(
        "Seed of every random number of the bench: the same seed, configuration and commands "
        "give the same tags and readings.", default=0, check=between(0, MAX_SEED))
    service: str | None = setting(
        "Address of a bench service hosting this bench for several processes (HOST:PORT or "
        "unix:PATH; host one with `python -m qkdnode.node.config.bench FILE`). When set, sim:// "
        "instruments connect to it, so Alice's and Bob's processes share one link.",
        default=None, check=_service_address)
    source: SourceParams = setting("Laser and intensity modulator.",
                                   default_factory=SourceParams)
    fibre: FibreParams = setting("Quantum channel.", default_factory=FibreParams)
    receiver: ReceiverParams = setting("Bob's passive basis choice.",
                                       default_factory=ReceiverParams)
    detector: DetectorParams = setting(
        "The four detectors X0, X1, Z0, Z1, alike (or give [[bench.detectors]]).",
        default_factory=DetectorParams)
    detectors: tuple[DetectorParams, ...] = setting(
        "Each detector apart: four [[bench.detectors]] tables, X0, X1, Z0, Z1, instead of "
        "[bench.detector].", default=())
    tagger: TaggerParams = setting("Time tagger and Bob's clock.", default_factory=TaggerParams)

    def validate(self) -> Iterator[tuple[tuple[str, ...], str]]:
        if self.detectors and len(self.detectors) != len(BenchParams().detectors):
            yield ("detectors",), (f"need {len(BenchParams().detectors)} tables (X0, X1, Z0, "
                                   f"Z1), got {len(self.detectors)}")
            return
        if self.detectors and self.detector != DetectorParams():
            yield ("detector",), "give [bench.detector] or [[bench.detectors]], not both"
            return
        try:
            self.params()
        except ValueError as exc:
            yield _located(str(exc))

    def params(self) -> BenchParams:
        """The bench's physics as the simulation takes it."""
        detectors = self.detectors or (self.detector,) * len(BenchParams().detectors)
        return BenchParams(source=self.source, fibre=self.fibre, receiver=self.receiver,
                           detectors=detectors, tagger=self.tagger)


_SECTIONS = {"BenchParams": (), "SourceParams": ("source",), "FibreParams": ("fibre",),
             "ReceiverParams": ("receiver",), "TaggerParams": ("tagger",),
             "DetectorParams": ("detector",)}


def _located(message: str) -> tuple[tuple[str, ...], str]:
    """``"SourceParams.mu2: need ..."`` -> (("source", "mu2"), "need ...")."""
    match = _CLASS_FIELD.match(message)
    if match is None or match.group(1) not in _SECTIONS:
        return (), message
    return (*_SECTIONS[match.group(1)], match.group(2)), match.group(3)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A whole node configuration file."""

    node: NodeIdentity = setting("This node's identity.")
    instruments: tuple[InstrumentConfig, ...] = setting("Instruments ([[instruments]]).",
                                                        default=())
    links: tuple[LinkConfig, ...] = setting("QKD links ([[links]]).", default=())
    key_manager: KeyManagerConfig = setting("Key manager.", default=KeyManagerConfig())
    peers: tuple[PeerConfig, ...] = setting("Peer nodes ([[peers]]).", default=())
    bench: BenchConfig = setting(
        "The simulated optical bench (CI, demos) that sim:// resources reach; unused "
        "without them.", default_factory=BenchConfig)

    def validate(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        yield from _unique(self.instruments, "name", "instruments")
        yield from _unique(self.links, "name", "links")
        yield from _unique(self.peers, "name", "peers")
        for i, instrument in enumerate(self.instruments):
            bench = _sim_bench(instrument.resource)
            if bench is None:
                continue
            if bench != self.bench.name:
                yield (("instruments", i, "resource"),
                       f"bench {bench!r} is not the configured bench {self.bench.name!r}")
        instruments = {i.name for i in self.instruments}
        peers = {p.name for p in self.peers}
        for i, peer in enumerate(self.peers):
            if peer.name == self.node.name:
                yield ("peers", i, "name"), "a node cannot be its own peer"
        for i, vendor in enumerate(self.key_manager.vendor_links):
            if vendor.peer not in peers:
                known = ", ".join(sorted(peers)) or "none declared"
                yield (("key_manager", "vendor_links", i, "peer"),
                       f"unknown peer {vendor.peer!r} (peers: {known})")
        for sae, node in self.key_manager.saes.items():
            if not isinstance(node, str) or _NAME(node) is not None:
                yield ("key_manager", "saes", sae), "must be a node name (text)"
            elif not sae or sae.startswith("@"):
                yield ("key_manager", "saes", sae), "an SAE ID is non-empty and not '@...'"
        for i, link in enumerate(self.links):
            if link.peer not in peers:
                known = ", ".join(sorted(peers)) or "none declared"
                yield ("links", i, "peer"), f"unknown peer {link.peer!r} (peers: {known})"
            for j, name in enumerate(link.instruments):
                if name not in instruments:
                    known = ", ".join(sorted(instruments)) or "none declared"
                    yield (("links", i, "instruments", j),
                           f"unknown instrument {name!r} (instruments: {known})")

    def instruments_with_role(self, role: str) -> tuple[InstrumentConfig, ...]:
        """The instruments of one role, in file order."""
        return tuple(i for i in self.instruments if i.role == role)
