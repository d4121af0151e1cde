"""Band roles: which polarisation each band of a product holds, and which bands feed a model.

A band's polarisation comes from its description (`VV`, `vv`, `Sigma0_VV_db`, `Amplitude_HH`),
its band tags (`POLARISATION=VH`, as GDAL's Sentinel-1 driver writes), or, for a file with one
band, the file name (`…_VV.tif`, `vh.tif`, `s1a-iw-grd-vv-….tiff`). Models take roles rather
than names: co-polarised (VV or HH) and cross-polarised (VH or HV). Weights record their bands
by name; a generic name (`SAR`, `band1`) counts as co-pol for one band and as the Sentinel-1
order (co, cross) for two.

    pols = [polarisation(d) for d in ("Sigma0_VV_db", "Sigma0_VH_db")]   # ["VV", "VH"]
    choice = select_bands(pols, ["Sigma0_VV_db", "Sigma0_VH_db"], model_roles(["SAR"]))
    choice.indexes, choice.note   # [1], "bands: VV (band 1) as co-pol; VH (band 2) unused"
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sarmae_cli.errors import UsageError

POLARISATIONS = ("VV", "VH", "HH", "HV")
ROLE_OF = {"VV": "co", "HH": "co", "VH": "cross", "HV": "cross"}
ROLE_NAMES = {"co": "co-pol", "cross": "cross-pol"}
#: Words glued to a polarisation in band names (`Sigma0VV`, `gamma0_vh`): stripped first.
_PREFIXES = ("sigma0", "gamma0", "beta0", "amplitude", "intensity", "sigma", "gamma", "amp", "int")


def _word_polarisation(word: str) -> tuple[str, str] | None:
    """(polarisation, the prefix glued to it) of one word (`vv` -> ("VV", ""), `Sigma0VH` ->
    ("VH", "Sigma0")), or None."""
    if word.upper() in POLARISATIONS:
        return word.upper(), ""
    for prefix in _PREFIXES:
        if word.lower().startswith(prefix) and word[len(prefix) :].upper() in POLARISATIONS:
            return word[len(prefix) :].upper(), word[: len(prefix)]
    return None


def polarisation(text: str | None) -> str | None:
    """The one polarisation named in `text` (VV, VH, HH or HV), or None when it names none or
    several (a VV/VH ratio band is no polarisation)."""
    if not text:
        return None
    found = {hit[0] for word in re.split(r"[^A-Za-z0-9]+", text) if (hit := _word_polarisation(word))}
    return found.pop() if len(found) == 1 else None


#: A Sentinel-1 SAFE measurement TIFF name once its polarisation is taken out: its last field,
#: the image number (001, 002), differs between the polarisations of one product.
_SAFE_MEASUREMENT = re.compile(
    r"(s1[a-d]-[a-z0-9]+-[a-z]+-\d{8}t\d{6}-\d{8}t\d{6}-\d{6}-[0-9a-f]{6})-\d{3}", re.I
)


def polarisation_token(stem: str) -> tuple[str, str] | None:
    """(polarisation, the name without it) of a file name (without suffix) that names exactly one
    polarisation in one word: `scene_VV` -> ("VV", "scene"), `vh` -> ("VH", ""),
    `s1a-iw-grd-vv-<start>-<stop>-<orbit>-<take>-001` -> ("VV", `s1a-iw-grd-<start>-...-<take>`)
    (a SAFE measurement's image number dropped). The word goes with one separator beside it;
    None when no word, or more than one, names a polarisation."""
    parts = re.split(r"([^A-Za-z0-9]+)", stem)  # words at even indexes, separators between
    hits = [(i, hit) for i in range(0, len(parts), 2) if (hit := _word_polarisation(parts[i]))]
    if len(hits) != 1:
        return None
    i, (pol, prefix) = hits[0]
    if prefix:
        parts[i] = prefix
    elif i > 0:
        del parts[i - 1 : i + 1]  # the word and the separator before it
    else:
        del parts[i : i + 2]  # the first word and the separator after it
    rest = "".join(parts)
    safe = _SAFE_MEASUREMENT.fullmatch(rest)
    return pol, safe.group(1) if safe else rest


def model_roles(bands: Sequence[str]) -> list[str]:
    """The role of each input channel of weights whose bands are `bands` (their stored names)."""
    pols = [polarisation(b) for b in bands]
    if all(p is not None for p in pols):
        return [ROLE_OF[p] for p in pols]  # type: ignore[index]
    if len(bands) == 1 or len(set(bands)) == 1:
        return ["co"] * len(bands)  # one generic SAR band (replicated for imported RGB models)
    if len(bands) == 2:
        return ["co", "cross"]  # the Sentinel-1 stacking order
    return []  # unknown: bands are matched by count


@dataclass(frozen=True)
class BandChoice:
    """The bands fed to a model (1-based indexes, in model order) and the line that says so."""

    indexes: list[int]
    note: str


def _label(i: int, pols: Sequence[str | None], names: Sequence[str], where: Sequence[str] = ()) -> str:
    name = pols[i] or (names[i] if names[i] else None)
    place = where[i] if i < len(where) else f"band {i + 1}"
    return (f"{name} ({place})" if place else name) if name else place or f"band {i + 1}"


def select_bands(
    pols: Sequence[str | None],
    names: Sequence[str],
    roles: Sequence[str],
    prefer: Sequence[str] = (),
    where: Sequence[str] = (),
) -> BandChoice:
    """Bands for a model whose channels have `roles`, from a product whose bands have
    polarisations `pols` (None: unknown) and descriptions `names`. `prefer`: the polarisation
    the weights were trained on per channel (VV over HH when both are there). `where`: how to
    name each band in the note (default `band N`; '' for none, as for a scene given as one file
    per polarisation, whose files the note's reader knows by their polarisation). A missing
    role is taken by the other one when the model has one channel (with a note); an error only
    when no usable band exists."""
    n = len(pols)
    if not roles:
        return BandChoice(list(range(1, n + 1)), "")
    if all(p is None for p in pols):
        return _unnamed(n, names, roles)
    used: list[int] = []
    notes: list[str] = []
    for k, role in enumerate(roles):
        want = prefer[k] if k < len(prefer) and prefer[k] in ROLE_OF else None
        candidates = [
            i for i in range(n) if pols[i] is not None and ROLE_OF[pols[i]] == role and i not in used
        ]
        if not candidates and len(roles) == 1:
            candidates = [i for i in range(n) if pols[i] is not None]
            if candidates:
                notes.append(
                    f"no {ROLE_NAMES[role]} band: {pols[candidates[0]]} stands in (expect lower accuracy)"
                )
        if not candidates:
            found = ", ".join(_label(i, pols, names, where) for i in range(n))
            need = " and ".join(ROLE_NAMES[r] for r in roles)
            raise UsageError(
                f"the weights need {need} bands; found {found}; give a product with them or choose "
                "bands with --bands"
            )
        pick = next((i for i in candidates if pols[i] == want), candidates[0])
        same = [i + 1 for i in range(n) if pols[i] == pols[pick]]
        if len(same) > 1:
            notes.append(f"bands {', '.join(map(str, same))} are all {pols[pick]}: band {pick + 1} used")
        used.append(pick)
    parts = [f"{_label(i, pols, names, where)} as {ROLE_NAMES[roles[k]]}" for k, i in enumerate(used)]
    unused = [_label(i, pols, names, where) for i in range(n) if i not in used]
    if unused:
        parts.append(f"{', '.join(unused)} unused")
    return BandChoice([i + 1 for i in used], "; ".join([f"bands: {'; '.join(parts)}", *notes]))


def _unnamed(n: int, names: Sequence[str], roles: Sequence[str]) -> BandChoice:
    """Bands without polarisation names: taken in order when the counts match; two bands
    follow the Sentinel-1 stacking order (co, cross)."""
    label = ", ".join(f"band {i + 1}" for i in range(n))
    if n == len(roles):
        parts = "; ".join(f"band {i + 1} as {ROLE_NAMES[r]}" for i, r in enumerate(roles))
        return BandChoice(list(range(1, n + 1)), f"bands: {parts} (no polarisation in the band names)")
    if n == 2 and list(roles) in (["co"], ["cross"]):
        i = 1 if roles[0] == "co" else 2
        return BandChoice(
            [i],
            f"bands: band {i} as {ROLE_NAMES[roles[0]]}, by the Sentinel-1 order (VV, VH); "
            "name the bands or choose with --bands",
        )
    raise UsageError(
        f"{n} bands without polarisation names ({label}) for weights that take "
        f"{' and '.join(ROLE_NAMES[r] for r in roles)}; choose bands with --bands"
    )
