"""``qkdnode keyrate``: the finite-key secret key rate of a fibre link, decoy settings optimised.

A planning tool for a lab link: for each distance it finds the globally optimal decoy-state
settings (mu1, mu2, p_mu1, p_mu2, q_x) with :func:`qkdnode.dsp.estimation.optimize_decoy` for
the Lim et al. (2014) finite-key bounds, and prints the key per pulse, the key rate at the
given pulse rate and the settings to configure in ``[links.decoy]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .args import positive_float

__all__ = ["register"]


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def register(subparsers: Any) -> None:
    """Adds ``keyrate`` (the link-model options default to None: LinkModel's own defaults)."""
    parser = subparsers.add_parser(
        "keyrate", help="finite-key secret key rate of a fibre link, decoy settings optimised",
        description="Optimises the decoy-state settings of a BB84 fibre link for the Lim et al. "
                    "(PRA 89, 022307, 2014) finite-key bounds and prints the secret key rate. "
                    "Link defaults are the paper's Fig. 1 parameters.")
    parser.add_argument("--distance-km", type=_non_negative_float, nargs="+", required=True,
                        metavar="KM", help="fibre length(s)")
    parser.add_argument("--block-bits", type=positive_float, default=1e7, metavar="N",
                        help="finite-key block size n_X, sifted X bits (default: 1e7)")
    parser.add_argument("--pulse-rate-hz", type=positive_float, default=1e9, metavar="HZ",
                        help="pulse rate for the key rate in bit/s (default: 1e9)")
    link = parser.add_argument_group("link model (defaults: Lim et al. Fig. 1)")
    link.add_argument("--fiber-loss-db-per-km", type=_non_negative_float,
                      default=None)
    link.add_argument("--detector-efficiency", type=positive_float,
                      default=None)
    link.add_argument("--dark-count-probability", type=_fraction,
                      default=None)
    link.add_argument("--afterpulse-probability", type=_fraction,
                      default=None)
    link.add_argument("--misalignment", type=_fraction, default=None)
    link.add_argument("--ec-efficiency", type=positive_float, default=None)
    link.add_argument("--mu3", type=_non_negative_float, default=None)
    security = parser.add_argument_group("security parameters")
    security.add_argument("--eps-cor", type=_fraction, default=1e-15)
    security.add_argument("--kappa", type=_fraction, default=1e-15,
                          help="secrecy per key bit, eps_sec = kappa * key length")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=_run)


_LINK_OPTIONS = ("fiber_loss_db_per_km", "detector_efficiency", "dark_count_probability",
                 "afterpulse_probability", "misalignment", "ec_efficiency", "mu3")


def _run(args: argparse.Namespace) -> int:
    # Imported here: scipy.optimize takes seconds to import on a busy machine, and the other
    # commands do not need it.
    from qkdnode.dsp.estimation import LinkModel, optimize_decoy

    given = {name: getattr(args, name) for name in _LINK_OPTIONS
             if getattr(args, name) is not None}
    rows = []
    for distance in args.distance_km:
        try:
            link = LinkModel(distance, **given)
        except ValueError as exc:
            print(f"qkdnode keyrate: {exc}", file=sys.stderr)
            return 2
        if not args.json:
            print(f"optimising {distance:g} km ...", file=sys.stderr, flush=True)
        best = optimize_decoy(link, args.block_bits, eps_cor=args.eps_cor, kappa=args.kappa)
        rows.append({
            "distance_km": distance,
            "block_bits": args.block_bits,
            "rate_per_pulse": best.rate_per_pulse,
            "key_rate_bps": best.rate_per_pulse * args.pulse_rate_hz,
            "pulses_per_block": best.pulses,
            "key_bits_per_block": best.key.ell,
            "qber_x": best.key.qber_x,
            "mu1": best.mu1, "mu2": best.mu2, "mu3": link.mu3,
            "p_mu1": best.p_mu1, "p_mu2": best.p_mu2, "q_x": best.q_x,
            "no_key_reason": best.key.reason,
        })
    if args.json:
        settings = {key: value for key, value in vars(args).items()
                    if key not in ("handler", "json", "distance_km", "log_level", "log_format")}
        model = LinkModel(0.0, **given)
        settings.update({name: getattr(model, name) for name in _LINK_OPTIONS})
        print(json.dumps({"settings": settings, "points": rows}, indent=2))
        return 0
    print(f"{'km':>6} {'key/pulse':>10} {'key rate':>12} {'QBER_X':>7} {'mu1':>6} {'mu2':>7} "
          f"{'p_mu1':>6} {'p_mu2':>6} {'q_x':>6}")
    for row in rows:
        if row["rate_per_pulse"] <= 0:
            print(f"{row['distance_km']:6g} {'no key':>10}  ({row['no_key_reason']})")
            continue
        print(f"{row['distance_km']:6g} {row['rate_per_pulse']:10.3e} "
              f"{_bps(row['key_rate_bps']):>12} {row['qber_x']:7.2%} {row['mu1']:6.3f} "
              f"{row['mu2']:7.4f} {row['p_mu1']:6.3f} {row['p_mu2']:6.3f} {row['q_x']:6.3f}")
    return 0


def _bps(value: float) -> str:
    for unit, scale in (("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} bit/s"
