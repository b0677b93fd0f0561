"""The demo's constants, its model source (scripted offline, or a real model) and its tools."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..testing.script import Script
from ..testing.scripted_client import register_scripted_client, scripted_llm_config

MODES = ("planning_and_control", "one_shot")
SPECTRUM_FILE = "cmb_tt_spectrum.csv"
SCRIPTED_PRICE = (0.00015, 0.0006)  # $ per 1k prompt / completion tokens, gpt-4o-mini's list price
DEFAULT_REAL_MODEL = "gpt-4o-mini"
TASKS = {
    "one_shot": "Compute a toy CMB TT power spectrum for the Planck 2018 base-LCDM parameters and save it "
                f"to {SPECTRUM_FILE}.",
    "planning_and_control": "Retrieve the Planck 2018 base-LCDM parameters, compute a toy CMB TT power spectrum "
                            f"from them into {SPECTRUM_FILE}, and report where its first acoustic peak lies.",
}

# Planck 2018 TT,TE,EE+lowE+lensing best fit (Planck Collaboration VI 2018, Table 2).
PLANCK_2018 = {"H0": 67.36, "ombh2": 0.02237, "omch2": 0.1200, "tau": 0.0544, "ns": 0.9649, "ln10^10As": 3.044}




class NullIOStream:
    """An AG2 IOStream that discards everything AG2 would print (input answers empty)."""

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        pass

    def send(self, message: Any) -> None:
        pass

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return ""


class Models:
    """Where the agents' replies come from: a :class:`Script` offline, or a real model config.

    Chats script the replies they expect with :meth:`script` (ignored with a real model) and give
    their agents :meth:`config`; :meth:`activate` registers the scripted client on them.
    """

    def __init__(self, real_config: dict[str, Any] | None = None) -> None:
        self.real_config = real_config
        self._script = None if real_config else Script()

    @property
    def offline(self) -> bool:
        return self.real_config is None

    @property
    def model_name(self) -> str:
        return str(self.real_config["model"]) if self.real_config else "scripted"

    def config(self) -> dict[str, Any]:
        if self.real_config is not None:
            return dict(self.real_config)  # a fresh dict per agent: AG2 may mutate what it is given
        assert self._script is not None  # offline: set in __init__
        return scripted_llm_config(self._script, price=SCRIPTED_PRICE)

    def script(self, agent_name: str, *replies: Any) -> None:
        if self._script is not None:
            self._script.add(agent_name, *replies)

    def activate(self, *agents: Any) -> None:
        if self._script is not None:
            register_scripted_client(*agents)

    def close(self) -> None:
        """Forget the script (the scripted client keeps a process-wide registry of them)."""
        if self._script is not None:
            self._script.unregister()


def real_model_config(environ: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """The real model's llm_config when ``OPENAI_API_KEY`` is set, else None (offline)."""
    key = environ.get("OPENAI_API_KEY", "").strip()
    if not key:
        return None
    return {"model": environ.get("CMBAGENT_EVENTS_DEMO_MODEL", "").strip() or DEFAULT_REAL_MODEL,
            "api_type": "openai", "api_key": key}


# -- tools -------------------------------------------------------------------------------------------
def get_planck_parameters(release: str = "2018") -> dict[str, float]:
    """Base-LCDM best-fit cosmological parameters from a Planck data release (only 2018 is known)."""
    if release.strip() != "2018":
        raise ValueError(f"unknown Planck release {release!r}; known: 2018")
    return dict(PLANCK_2018)


def parameter_tool(into: dict[str, float]) -> Callable[[str], dict[str, float]]:
    """``get_planck_parameters`` that also keeps what it returned in ``into`` (for the next step)."""

    def fetch(release: str = "2018") -> dict[str, float]:
        into.update(get_planck_parameters(release))
        return dict(into)

    fetch.__name__, fetch.__doc__ = get_planck_parameters.__name__, get_planck_parameters.__doc__
    return fetch


def spectrum_code(params: dict[str, float]) -> str:
    """The engineer's code: a toy TT spectrum (acoustic peaks on a tilted plateau), written as CSV."""
    body = """\
# filename: toy_tt_spectrum.py
# Toy CMB TT power spectrum for base-LCDM: acoustic oscillations on a tilted Sachs-Wolfe plateau,
# damped at high ell. Not a Boltzmann code; shapes and peak positions are only indicative.
import csv, math

ns, ombh2 = __NS__, __OMBH2__
ell_acoustic = 301.0                       # peak spacing, ~ pi / theta_*
baryon_boost = 1.0 + 8.0 * (ombh2 - 0.022)  # more baryons, higher odd peaks
rows = []
for ell in range(2, 2501):
    plateau = 1100.0 * (ell / 10.0) ** (ns - 1.0)
    phase = 2.0 * math.pi * (ell - 220.0) / ell_acoustic
    acoustic = 4600.0 * baryon_boost * math.exp(-((ell - 220.0) / 900.0) ** 2) * (0.55 + 0.45 * math.cos(phase))
    rows.append((ell, round((plateau + acoustic) * math.exp(-(ell / 1500.0) ** 2), 3)))
with open("__FILE__", "w", newline="") as f:
    out = csv.writer(f)
    out.writerow(["ell", "D_ell_uK2"])
    out.writerows(rows)
peak = max(rows[:600], key=lambda r: r[1])
print(f"wrote {len(rows)} multipoles to __FILE__; first acoustic peak at ell={peak[0]}, D_ell={peak[1]} uK^2")
"""
    body = body.replace("__NS__", repr(params["ns"])).replace("__OMBH2__", repr(params["ombh2"]))
    return "```python\n" + body.replace("__FILE__", SPECTRUM_FILE) + "```"


def spectrum_tool(work_dir: Path, into: list[str]) -> Callable[[str], str]:
    """``summarize_spectrum`` over CSVs in ``work_dir``; each report is also appended to ``into``."""

    def summarize_spectrum(file_name: str) -> str:
        """Read a power spectrum CSV (columns ell, D_ell_uK2) from the work dir and report its first peak."""
        path = (work_dir / file_name).resolve()
        if work_dir.resolve() not in path.parents:
            raise ValueError(f"{file_name!r} is outside the work dir")
        with path.open(newline="") as f:
            rows = [(int(r["ell"]), float(r["D_ell_uK2"])) for r in csv.DictReader(f)]
        ell, value = max((r for r in rows if r[0] < 600), key=lambda r: r[1])
        into.append(f"{len(rows)} multipoles (ell {rows[0][0]}-{rows[-1][0]}); first acoustic peak at ell={ell}, "
                    f"D_ell={value:.1f} uK^2")
        return into[-1]

    return summarize_spectrum
