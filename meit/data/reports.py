"""Report templates of the synthetic ECGs: SCP code -> phrases, in each site's style.

Every finding of a record is stated with one of its code's phrases, so a reader (or
`meit.eval.labels.extract_labels`) recovers all codes from the text. Phrases of different
codes never contain each other (checked by the tests), so substring matching is unambiguous.
"""

from __future__ import annotations

import numpy as np

# Order in which findings appear in a report: rhythm first, then conduction, then form.
REPORT_ORDER = (
    "SR", "SBRAD", "STACH", "AFIB", "AFLT", "PVC", "1AVB", "CLBBB", "CRBBB", "LAFB",
    "LVH", "LVOLT", "STE_", "STD_", "INVT", "NORM",
)

# PTB-XL style: lowercase English sentences joined by ". ".
PTBXL_PHRASES: dict[str, tuple[str, ...]] = {
    "SR": ("sinus rhythm", "normal sinus rhythm", "rhythm is sinus"),
    "SBRAD": ("sinus bradycardia", "marked sinus bradycardia"),
    "STACH": ("sinus tachycardia",),
    "AFIB": ("atrial fibrillation", "atrial fibrillation with irregular ventricular response"),
    "AFLT": ("atrial flutter", "atrial flutter with av block", "atrial flutter with variable conduction"),
    "PVC": ("ventricular premature complexes", "ventricular extrasystoles", "premature ventricular contractions"),
    "1AVB": ("first degree av block", "1st degree av block", "first degree atrioventricular block"),
    "CLBBB": ("complete left bundle branch block", "left bundle branch block"),
    "CRBBB": ("complete right bundle branch block", "right bundle branch block"),
    "LAFB": ("left anterior fascicular block", "left anterior hemiblock"),
    # not "voltage criteria for ...": PTB-XL codes that phrase VCLVH too, and the waveform cannot tell the two apart
    "LVH": ("left ventricular hypertrophy", "signs of left ventricular hypertrophy"),
    "LVOLT": ("low qrs voltages in the limb leads", "low limb lead voltage", "peripheral low voltage"),
    "STE_": ("st elevation", "st segment elevation", "non-specific st elevation"),
    "STD_": ("st depression", "st segment depression", "non-specific st depression"),
    "INVT": ("t wave inversion", "inverted t waves", "negative t waves"),
    "NORM": ("normal ecg",),
}
# NORM after an abnormal-rate sinus rhythm reads "otherwise normal ecg" (as in PTB-XL).
PTBXL_NORM_AFTER_RATE = ("otherwise normal ecg", "normal ecg otherwise")

# MIMIC-IV-ECG style: Title case machine statements, one per report_k column.
MIMIC_PHRASES: dict[str, tuple[str, ...]] = {
    "SR": ("Sinus rhythm", "Normal sinus rhythm"),
    "SBRAD": ("Sinus bradycardia", "Marked sinus bradycardia"),
    "STACH": ("Sinus tachycardia",),
    "AFIB": ("Atrial fibrillation", "Atrial fibrillation with rapid ventricular response"),
    "AFLT": ("Atrial flutter", "Atrial flutter with variable A-V block", "Atrial flutter with 2:1 A-V conduction"),
    "PVC": ("Ventricular premature complexes", "Ventricular premature complex", "Premature ventricular contractions"),
    "1AVB": ("1st degree A-V block", "First degree A-V block"),
    "CLBBB": ("Left bundle branch block", "Complete left bundle branch block"),
    "CRBBB": ("Right bundle branch block", "Complete right bundle branch block"),
    "LAFB": ("Left anterior fascicular block", "Left anterior hemiblock"),
    "LVH": ("Left ventricular hypertrophy",),
    "LVOLT": ("Low QRS voltages in limb leads", "Low limb lead voltage"),
    "STE_": ("ST elevation", "ST segment elevation"),
    "STD_": ("ST depression", "ST segment depression"),
    "INVT": ("T wave inversion", "Inverted T waves"),
    "NORM": ("Normal ECG",),
}
# Borderline: only a rate abnormality or a fascicular block, nothing else abnormal.
MIMIC_BORDERLINE = frozenset({"SBRAD", "STACH", "LAFB", "1AVB"})


def ordered_codes(codes: dict[str, float] | list[str]) -> list[str]:
    """The codes of a record in report order (unknown codes last, sorted)."""
    known = [c for c in REPORT_ORDER if c in codes]
    return known + sorted(c for c in codes if c not in REPORT_ORDER)


def ptbxl_report(codes: dict[str, float] | list[str], rng: np.random.Generator) -> str:
    """A PTB-XL-style English report: lowercase sentences, each ending with '.'.

    Args:
        codes: the record's SCP codes.
        rng: random generator choosing among paraphrases.

    Returns:
        e.g. "sinus rhythm. left anterior fascicular block. left ventricular hypertrophy."
    """
    rate_abnormal = "SBRAD" in codes or "STACH" in codes
    sentences = []
    for code in ordered_codes(codes):
        if code == "NORM" and rate_abnormal:
            options = PTBXL_NORM_AFTER_RATE
        else:
            options = PTBXL_PHRASES[code]
        sentences.append(options[int(rng.integers(len(options)))])
    return ". ".join(sentences) + "."


def mimic_statements(codes: dict[str, float] | list[str], rng: np.random.Generator) -> list[str]:
    """MIMIC-IV-ECG machine statements (one per line), ending with the overall verdict.

    Args:
        codes: the record's SCP codes.
        rng: random generator choosing among paraphrases.

    Returns:
        e.g. ["Sinus rhythm", "Left anterior fascicular block", "Borderline ECG"].
    """
    findings = [c for c in ordered_codes(codes) if c != "NORM"]
    lines = [MIMIC_PHRASES[c][int(rng.integers(len(MIMIC_PHRASES[c])))] for c in findings]
    if "NORM" in codes:
        lines.append("Normal ECG")
    elif set(findings) - {"SR"} <= MIMIC_BORDERLINE:
        lines.append("Borderline ECG")
    else:
        lines.append("Abnormal ECG")
    return lines


def site_report(codes: dict[str, float] | list[str], site: str, rng: np.random.Generator) -> str:
    """The report text of one record in `site`'s style (MIMIC statements joined by '. ')."""
    if site == "ptbxl":
        return ptbxl_report(codes, rng)
    if site == "mimic":
        return ". ".join(mimic_statements(codes, rng))
    raise ValueError(f"unknown site: {site}; choose from mimic, ptbxl")
