"""PNG plots of a replay: replicas against demand over time, and the latency CDF.

Demand is the oracle's zero-wait pod profile, reduced to its peak per tick so a million-job trace
still plots in a second; the CDF is drawn from 2,000 quantiles for the same reason.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter, ScalarFormatter

from experiments.oracle import zero_wait_profile
from experiments.replay import Report

_CDF_POINTS = 2000


def _demand_per_tick(report: Report, ticks: np.ndarray) -> np.ndarray:
    prepared = report.prepared
    if len(ticks) == 0:
        return np.zeros(0)
    profile = zero_wait_profile(prepared.trace.arrivals, prepared.service, prepared.setup.slots)
    # Level in force at each tick start, then the peak reached before the next tick.
    index = np.clip(np.searchsorted(profile.times, ticks, side="right") - 1, 0, None)
    return np.asarray(np.maximum.reduceat(profile.pods, index))


def plot_report(report: Report, out_dir: Path) -> list[Path]:
    """Write ``replicas.png`` and ``latency_cdf.png`` into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_replicas(report, out_dir / "replicas.png"), _latency_cdf(report, out_dir / "latency_cdf.png")]


def _replicas(report: Report, path: Path) -> Path:
    count = len(report.results)
    fig, axes = plt.subplots(count, 1, figsize=(11, 2.6 * count + 0.6), sharex=True, squeeze=False)
    for ax, outcome, result in zip(axes[:, 0], report.outcomes, report.results, strict=True):
        ticks = result.timeline.times
        ax.step(ticks, _demand_per_tick(report, ticks), where="post", color="0.6", lw=0.8, label="demand")
        ax.step(ticks, result.timeline.replicas, where="post", lw=1.0, label="replicas")
        ax.step(ticks, result.timeline.ready, where="post", lw=0.8, alpha=0.8, label="ready")
        ax.set_ylabel("pods")
        score = f"{outcome.slo_attainment:.1%} within SLO, {outcome.cost_vs_oracle:.2f}× oracle"
        ax.set_title(f"{outcome.policy}: {score}", fontsize=9)
        ax.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds since first arrival")
    fig.suptitle(f"{report.prepared.trace.name}: replicas vs zero-wait demand", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency_cdf(report: Report, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    levels = np.linspace(0, 100, _CDF_POINTS)
    for outcome, result in zip(report.outcomes, report.results, strict=True):
        ax.plot(np.percentile(result.latency, levels), levels / 100, lw=1.2, label=outcome.policy)
    ax.axvline(report.prepared.setup.slo, color="k", ls="--", lw=0.8, label="SLO")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("latency (s, arrival to completion)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title(f"{report.prepared.trace.name}: latency CDF", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
