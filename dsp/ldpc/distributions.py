"""Variable-node degree distributions of the shipped LDPC family, with their sources.

Kept as Python data (not a data file) so that every installation carries them; read them through
:func:`qkdnode.dsp.ldpc.construct.load_distributions`.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["DISTRIBUTIONS"]

# The rate-0.91 design (python -m qkdnode.dsp.ldpc.design --rates 0.91 --max-degree 30 --dv 5 6 7),
# shared by the rate-0.91 and rate-0.92 entries.
_LAMBDA_091: Final[dict[str, float]] = {
    "2": 0.02571,
    "3": 0.20319,
    "6": 0.14038,
    "7": 0.01764,
    "8": 0.0416,
    "9": 0.03645,
    "10": 0.03442,
    "11": 0.03325,
    "12": 0.03115,
    "13": 0.01896,
    "14": 0.04109,
    "15": 0.03334,
    "30": 0.34282,
}

# description: what the numbers mean; sources: citations; rates: one entry per shipped rate;
# designs: distributions designed here that no shipped code is built from (yet).
DISTRIBUTIONS: Final[dict[str, Any]] = {
    "description": "Edge-perspective variable-node degree distributions lambda(x) = sum_d "
    "lambda_d x^(d-1), keyed by degree d, optimised for the binary symmetric "
    "channel. Check degrees are not taken from the sources: construct.py keeps "
    "them concentrated (two consecutive degrees), which is what the sources' "
    "rho(x) are as well (except at rates 0.65, 0.60, 0.50). 'threshold' is the BSC "
    "crossover probability of the source's density evolution (infinite length, "
    "sum-product).",
    "sources": {
        "EL2009": "D. Elkouss, A. Leverrier, R. Alleaume, J. J. Boutros, 'Efficient "
        "reconciliation protocol for discrete-variable quantum key "
        "distribution', Proc. IEEE ISIT 2009, pp. 1879-1883, arXiv:0901.2140, "
        "Table I.",
        "qkdnode": "This project: qkdnode.dsp.ldpc.design (linear program on a Gaussian "
        "approximation for the BSC proposes, sampled density evolution decides; "
        "see 'design' in each entry). 'threshold' is the sampled "
        "density-evolution threshold, 'threshold_ga' the approximation's.",
    },
    "rates": {
        "0.95": {
            "source": "qkdnode",
            "threshold": 0.00451,
            "threshold_ga": 0.006,
            "design": {
                "command": "python -m qkdnode.dsp.ldpc.design --rates 0.95 --max-degree 15",
                "method": "LP on the Gaussian approximation at mean variable degree 3.2, 3.5, "
                "4.0, 4.5, 5.0; the proposal with the best sampled density-evolution "
                "threshold (dv = 5.0)",
                "mean_check_degree": 100.0,
                "max_degree": 15,
            },
            "built": "python -m qkdnode.dsp.ldpc.construct --out dsp/codes --rates 0.95 "
            "(seeds 20261132 for n64000_r095, 20261142 for n16000_r095: shipped_builds)",
            "note": "Replaces an unvalidated extrapolation (2 0.08, 3 0.30, 5 0.09, 9 0.19, 12 "
            "0.34) whose n64000 code discarded 1 of 8 frames at QBER 0.5 % where this "
            "one kept 8/8 (reconcile_local, whole syndrome at f >= 1.35, seed 7).",
            "lambda": {
                "2": 0.02,
                "3": 0.30707,
                "5": 0.15843,
                "6": 0.05356,
                "9": 0.08421,
                "10": 0.37672,
            },
        },
        "0.92": {
            "source": "qkdnode",
            "threshold": None,
            "note": "The rate-0.91 design (below) used at rate 0.92 with denser checks (mean "
            "check degree 87.5), for the 16 000-bit frames only (n16000_r092, QBER 0.5-1 %).",
            "built": "python -m qkdnode.dsp.ldpc.construct --out dsp/codes --rates 0.92 --z 16 "
            "(seed 20261324: construct._ADDED_SEEDS)",
            "lambda": _LAMBDA_091,
        },
        "0.91": {
            "source": "qkdnode",
            "threshold": 0.0103,
            "threshold_ga": 0.01332,
            "design": {
                "command": "python -m qkdnode.dsp.ldpc.design --rates 0.91 --max-degree 30 "
                "--dv 5.0 6.0 7.0",
                "method": "LP on the Gaussian approximation at mean variable degree 5, 6, 7; "
                "the proposal with the best sampled density-evolution threshold (dv = 7.0): "
                "f = 1.088 at infinite length, where the EL2009-based rate-0.90 entry below "
                "reaches 1.113 (sampled density evolution, same settings). Degrees up to 30 "
                "(the earlier rate-0.90 design stopped at 15: f = 1.139).",
                "mean_check_degree": 77.778,
                "max_degree": 30,
            },
            "built": "python -m qkdnode.dsp.ldpc.construct --out dsp/codes --rates 0.91 --z 192 "
            "(seed 20261323: construct._ADDED_SEEDS)",
            "lambda": _LAMBDA_091,
        },
        "0.90": {
            "source": "EL2009",
            "threshold": None,
            "note": "EL2009's rate-0.85 lambda(x), used at rate 0.90 with denser "
            "checks. EL2009's own rate-0.90 distribution (threshold 0.0109, "
            "i.e. f = 1.15 even at infinite length: 2 0.07689, 3 0.28096, 5 "
            "0.08933, 9 0.19620, 12 0.30631, 21 0.05031) failed 18 of 40 "
            "frames at QBER 1.05 % (n = 16000, layered min-sum) where this one "
            "failed 9.",
            "lambda": {
                "2": 0.04528,
                "3": 0.20537,
                "4": 0.05878,
                "5": 0.04274,
                "6": 0.08454,
                "7": 0.01176,
                "9": 0.05137,
                "21": 0.50015,
            },
        },
        "0.85": {
            "source": "EL2009",
            "threshold": 0.0199,
            "note": "Table I prints 0.094274 for lambda_5; the coefficients sum to 1 "
            "only with 0.04274, used here.",
            "lambda": {
                "2": 0.04528,
                "3": 0.20537,
                "4": 0.05878,
                "5": 0.04274,
                "6": 0.08454,
                "7": 0.01176,
                "9": 0.05137,
                "21": 0.50015,
            },
        },
        "0.80": {
            "source": "EL2009",
            "threshold": 0.0298,
            "lambda": {
                "2": 0.0942,
                "3": 0.18088,
                "6": 0.11972,
                "7": 0.0855,
                "8": 0.09816,
                "17": 0.07194,
                "26": 0.3496,
            },
        },
        "0.75": {
            "source": "EL2009",
            "threshold": 0.0392,
            "lambda": {
                "2": 0.10805,
                "3": 0.09511,
                "4": 0.01449,
                "5": 0.13764,
                "6": 0.10667,
                "7": 0.05288,
                "28": 0.01107,
                "31": 0.47408,
            },
        },
        "0.70": {
            "source": "EL2009",
            "threshold": 0.0504,
            "lambda": {
                "2": 0.05343,
                "3": 0.29406,
                "6": 0.00896,
                "9": 0.15571,
                "12": 0.12189,
                "25": 0.19872,
                "46": 0.09572,
                "62": 0.02741,
                "65": 0.04056,
                "73": 0.00354,
            },
        },
        "0.65": {
            "source": "EL2009",
            "threshold": 0.0633,
            "lambda": {
                "2": 0.10451,
                "3": 0.15652,
                "4": 0.08057,
                "5": 0.00056,
                "9": 0.12151,
                "13": 0.10485,
                "15": 0.10719,
                "21": 0.00771,
                "51": 0.31656,
            },
        },
        "0.60": {
            "source": "EL2009",
            "threshold": 0.0766,
            "lambda": {
                "2": 0.1104,
                "3": 0.20804,
                "8": 0.14163,
                "9": 0.14858,
                "26": 0.14438,
                "27": 0.08909,
                "46": 0.00748,
                "71": 0.15038,
            },
        },
        "0.55": {
            "source": "EL2009",
            "threshold": 0.0904,
            "lambda": {
                "2": 0.1688,
                "3": 0.20994,
                "6": 0.18095,
                "15": 0.03846,
                "16": 0.02635,
                "18": 0.23454,
                "19": 0.05815,
                "31": 0.0828,
            },
        },
        "0.50": {
            "source": "EL2009",
            "threshold": 0.1071,
            "lambda": {
                "2": 0.14438,
                "3": 0.19026,
                "4": 0.01836,
                "5": 0.00233,
                "6": 0.04697,
                "8": 0.053943,
                "9": 0.0559,
                "10": 0.0129,
                "11": 0.00162,
                "14": 0.06159,
                "15": 0.13115,
                "17": 0.01481,
                "47": 0.00879,
                "49": 0.0065,
                "55": 0.0021,
                "56": 0.00099,
                "57": 0.11178,
                "58": 0.06238,
                "59": 0.05094,
                "66": 0.0223,
            },
        },
    },
    # Designed by qkdnode.dsp.ldpc.design but not built into shipped codes (2026-11-22): at rate
    # 0.97 the best proposal's density-evolution threshold is f = 1.30 even at infinite length,
    # no better than the shipped rate-0.95 code at QBER 0.3 %. The rate-0.90 design, built at
    # n = 64000 (seed 20261131) and run through reconcile_local (12 frames, seed 7), did worse
    # than the shipped n64000_r090: f = 1.21 against 1.18 at QBER 1 %, and 5 of 12 frames
    # discarded at 1.5 % against none.
    "designs": {
        "0.97": {
            "source": "qkdnode",
            "threshold": 0.00226,
            "threshold_ga": 0.00327,
            "design": {
                "command": "python -m qkdnode.dsp.ldpc.design --rates 0.97 --max-degree 15",
                "mean_check_degree": 166.667,
                "max_degree": 15,
            },
            "lambda": {
                "2": 0.012,
                "3": 0.30827,
                "5": 0.17332,
                "6": 0.04002,
                "9": 0.29427,
                "10": 0.17212,
            },
        },
        "0.90": {
            "source": "qkdnode",
            "threshold": 0.01103,
            "threshold_ga": 0.01387,
            "design": {
                "command": "python -m qkdnode.dsp.ldpc.design --rates 0.90 --max-degree 15",
                "mean_check_degree": 50.0,
                "max_degree": 15,
            },
            "lambda": {"2": 0.04, "3": 0.31167, "6": 0.20567, "10": 0.17496, "11": 0.2677},
        },
    },
}
