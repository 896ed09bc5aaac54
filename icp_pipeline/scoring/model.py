"""An additive fit model a rep can read and an ops person can edit: points per trait.

The points come from an L2-regularised logistic regression of won vs lost deals on one-hot
account traits (regularisation keeps rare traits from getting wild points). Log-odds are then
mapped linearly onto 0-100, so points add: score = base + sum of the account's trait points,
with no hidden clipping. One log-odds unit is worth at most 20 points, so a model that
learned little produces scores near 50 instead of stretching noise across the scale.
"""

from __future__ import annotations

import functools
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from icp_pipeline.frames import grouped_order
from icp_pipeline.profile.traits import ACCOUNT_ROW, TECHNOLOGY, UNKNOWN, AccountTraits

# scipy is imported inside the functions that use it, here as in profile/, drift/ and validation:
# importing it takes about 1 s, which every `import icp_pipeline.definitions` would pay.
if TYPE_CHECKING:
    from scipy import sparse

MAX_POINTS_PER_LOGIT = 20.0
SCORE_SPAN = 90.0
ScoredBy = Literal["learned", "written_icp", "no_signal"]
# Row blocks of the fit, evaluated on threads; fixed, so the sums do not depend on the core count.
FIT_BLOCKS = 4


@dataclass(frozen=True)
class Design:
    """Accounts x trait-value indicator matrix and the names of its columns."""

    matrix: sparse.csr_matrix
    features: pd.DataFrame  # trait, value, group (single-valued trait name or "technology")
    account_ids: pd.Index


@dataclass
class PointsModel:
    """The editable model: a base and integer points per (trait, value)."""

    base: int
    points: pd.DataFrame  # trait, value, points, coefficient
    scored_by: ScoredBy
    intercept: float = 0.0
    scale: float = 0.0
    notes: list[str] = field(default_factory=list)

    def lookup(self) -> dict[tuple[str, str], int]:
        return {
            (t, v): int(p) for t, v, p in self.points[["trait", "value", "points"]].itertuples(index=False)
        }


def build_design(traits: AccountTraits, min_tech_accounts: int = 1) -> Design:
    """One-hot columns for every level of every single-valued trait (unknown included) and each technology.

    Built as one CSR matrix from integer codes: each single-valued trait puts exactly one entry
    in every row, technologies sit in their account's row (`account_row`); no text index lookups.
    """
    frame = traits.accounts
    ids = pd.Index(frame["account_id"].astype("str"))
    n = len(frame)
    trait_cols: list[np.ndarray] = []
    starts: list[int] = []
    names: list[tuple[str, str, str]] = []
    for trait in [c for c in frame.columns if c != "account_id"]:
        codes = frame[trait].astype("category")
        categories = list(codes.cat.categories)
        trait_cols.append(codes.cat.codes.to_numpy().astype(np.int64) + len(names))
        starts.append(len(names))
        names += [(trait, str(value), trait) for value in categories]
    tech = traits.technologies
    technology = tech[TECHNOLOGY].astype("category")
    codes = technology.cat.codes.to_numpy().astype(np.int64)
    values = [str(value) for value in technology.cat.categories]
    counts = np.bincount(codes, minlength=len(values))
    kept = sorted(
        (value, code) for code, value in enumerate(values) if counts[code] >= max(min_tech_accounts, 1)
    )
    tech_rows, tech_cols = np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    if kept:
        column_of_code = np.full(len(values), -1, dtype=np.int64)
        column_of_code[[code for _, code in kept]] = np.arange(len(kept))
        cols = column_of_code[codes]
        valid = cols >= 0
        tech_rows, tech_cols = tech[ACCOUNT_ROW].to_numpy()[valid], cols[valid] + len(names)
        names += [(TECHNOLOGY, value, TECHNOLOGY) for value, _ in kept]
    features = pd.DataFrame(names, columns=["trait", "value", "group"])
    return Design(_indicator_matrix(n, len(names), trait_cols, starts, tech_rows, tech_cols), features, ids)


def _indicator_matrix(
    rows: int,
    columns: int,
    trait_cols: list[np.ndarray],
    starts: list[int],
    tech_rows: np.ndarray,
    tech_cols: np.ndarray,
) -> sparse.csr_matrix:
    """The CSR matrix of ones at each row's trait columns (one per trait, `starts` its first) and
    technology columns, in canonical form (sorted, no repeats): what converting the coordinates
    gives, built in place.

    The coordinates and scipy's conversion allocated about 600 MB a design at 1M accounts, and
    fresh memory is what costs here (1.2 s a design in a nightly run, 0.3 s in a warm process).
    """
    from scipy import sparse

    if not trait_cols and not len(tech_rows):
        return sparse.csr_matrix((rows, columns))
    order = grouped_order(tech_rows, tech_cols)
    tech_rows, tech_cols = tech_rows[order], tech_cols[order]
    repeated = (np.diff(tech_rows) == 0) & (np.diff(tech_cols) == 0)
    outside = len(tech_rows) and (tech_rows.min() < 0 or tech_rows.max() >= rows)
    # A missing trait value (code -1) would land one column before its trait's first column.
    missing = any(len(cols) and cols.min() < start for cols, start in zip(trait_cols, starts, strict=True))
    if repeated.any() or outside or missing:
        # Not one indicator per (row, column): let scipy sum repeats and refuse bad indices, as before.
        every = np.concatenate([np.tile(np.arange(rows), len(trait_cols)), tech_rows])
        cols = np.concatenate([*trait_cols, tech_cols])
        return sparse.csr_matrix((np.ones(len(every)), (every, cols)), shape=(rows, columns))
    k = len(trait_cols)
    per_row = np.bincount(tech_rows, minlength=rows) + k
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(per_row, out=indptr[1:])
    index_type = np.int32 if max(int(indptr[-1]), columns) < 2**31 else np.int64
    indices = np.empty(int(indptr[-1]), dtype=index_type)
    row_start = indptr[:-1]
    for j, cols in enumerate(trait_cols):
        indices[row_start + j] = cols
    # Technologies follow the traits in their row, in column order (`order` sorted them).
    first = np.searchsorted(tech_rows, tech_rows, side="left")
    indices[row_start[tech_rows] + k + (np.arange(len(tech_rows)) - first)] = tech_cols
    matrix = sparse.csr_matrix(
        (np.ones(len(indices)), indices, indptr.astype(index_type)), shape=(rows, columns)
    )
    matrix.has_sorted_indices = True
    return matrix


def fit_logistic(
    x: sparse.csr_matrix, won: np.ndarray, l2: float = 2.0, trials: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Penalised maximum likelihood (intercept not penalised); deterministic L-BFGS.

    With `trials`, row i stands for `trials[i]` deals of which `won[i]` were won (a binomial
    likelihood): the same objective as one row per deal, fitted on fewer rows when deals share
    an account. The loss is summed over FIT_BLOCKS fixed row blocks evaluated on threads (the
    sparse products and numpy release the GIL), in a fixed order: the same result on any machine.
    """
    from scipy import optimize

    y = won.astype(float)
    n = np.ones(len(y)) if trials is None else trials.astype(float)
    n_features = x.shape[1]
    prior = np.clip(y.sum() / max(n.sum(), 1e-12), 1e-6, 1 - 1e-6)
    bounds = np.linspace(0, x.shape[0], FIT_BLOCKS + 1).astype(np.int64)
    blocks = [(_row_block(x, a, b), y[a:b], n[a:b]) for a, b in itertools.pairwise(bounds)]
    start = np.concatenate([[np.log(prior / (1 - prior))], np.zeros(n_features)])
    with ThreadPoolExecutor(max_workers=min(FIT_BLOCKS, os.cpu_count() or 1)) as pool:

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            parts = list(pool.map(functools.partial(_block_loss, w), blocks))
            grad = np.concatenate([[sum(p[1] for p in parts)], sum(p[2] for p in parts) + l2 * w[1:]])
            return sum(p[0] for p in parts) + 0.5 * l2 * float(w[1:] @ w[1:]), grad

        result = optimize.minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return float(result.x[0]), result.x[1:]


def _row_block(x: sparse.csr_matrix, start: int, stop: int) -> sparse.csr_matrix:
    """Rows start:stop of a CSR matrix sharing its data (slicing would copy them)."""
    from scipy import sparse

    first, last = x.indptr[start], x.indptr[stop]
    return sparse.csr_matrix(
        (x.data[first:last], x.indices[first:last], x.indptr[start : stop + 1] - first),
        shape=(stop - start, x.shape[1]),
    )


def _block_loss(
    w: np.ndarray, block: tuple[sparse.csr_matrix, np.ndarray, np.ndarray]
) -> tuple[float, float, np.ndarray]:
    """(negative log-likelihood, intercept gradient, coefficient gradient) of one row block.

    sum(n * softplus(z) - y * z) and x'(n * p - y), p = sigmoid(z), from e = exp(-|z|) (no
    overflow, and cheaper than logaddexp): softplus(z) = max(z, 0) + log1p(e), sigmoid(z) =
    1 / (1 + e) for z >= 0, else e / (1 + e).
    """
    x, y, n = block
    z = x @ w[1:]
    z += w[0]
    e = np.abs(z)
    np.negative(e, out=e)
    np.exp(e, out=e)
    terms = np.log1p(e)
    terms += np.maximum(z, 0.0)
    terms *= n
    p = np.where(z >= 0, 1.0, e)
    e += 1.0
    p /= e
    p *= n
    np.multiply(y, z, out=z)
    terms -= z
    residual = np.subtract(p, y, out=p)
    return float(np.sum(terms)), float(residual.sum()), x.T @ residual


def distinct_rows(matrix: sparse.csr_matrix, won: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a row of each distinct row, how many rows are like it, how many of those won).

    Deals of one account created months apart usually have the same traits: fitting one row per
    distinct row with its counts (a binomial likelihood) is the same objective on fewer rows.
    Rows are told apart by a random projection: equal rows give equal sums bit for bit (a
    canonical CSR row adds its entries in column order), and two different rows of ones summing
    to the same 53-bit random sum is as good as impossible.
    """
    keys = matrix @ np.random.default_rng(0).random(matrix.shape[1])
    group, distinct = pd.factorize(keys)  # a hash of the sums: sorting a million rows took a second
    first = np.zeros(len(distinct), dtype=np.int64)
    first[group[::-1]] = np.arange(len(group) - 1, -1, -1)  # the last write is the first occurrence
    trials = np.bincount(group, minlength=len(distinct))
    wins = np.bincount(group, weights=won.astype(np.float64), minlength=len(distinct))
    return first, trials, wins


def points_from_coefficients(intercept: float, coefficients: np.ndarray, design: Design) -> PointsModel:
    """Map log-odds linearly onto the score scale; points centred per trait on the average account."""
    features = design.features.assign(coefficient=coefficients)
    single = features[features["group"] != TECHNOLOGY]
    tech = features[features["group"] == TECHNOLOGY]
    counts = np.asarray(design.matrix.sum(axis=0)).ravel()
    features["accounts"] = counts
    mean_per_group = features[features["group"] != TECHNOLOGY].assign(
        weighted=lambda f: f["coefficient"] * f["accounts"]
    ).groupby("group")["weighted"].sum() / max(len(design.account_ids), 1)
    group_max = single.groupby("group")["coefficient"].max()
    group_min = single.groupby("group")["coefficient"].min()
    top = intercept + group_max.sum() + tech["coefficient"].clip(lower=0).sum()
    bottom = intercept + group_min.sum() + tech["coefficient"].clip(upper=0).sum()
    span = max(top - bottom, 1e-9)
    middle = (top + bottom) / 2
    scale = min(MAX_POINTS_PER_LOGIT, SCORE_SPAN / span)
    while True:
        centred = features["coefficient"] - features["group"].map(mean_per_group).fillna(0.0)
        points = np.rint(scale * centred).astype(int)
        base = int(np.rint(50 + scale * (intercept - middle + mean_per_group.sum())))
        with_points = features.assign(points=points)
        singles = with_points[with_points["group"] != TECHNOLOGY].groupby("group")["points"]
        techs = with_points.loc[with_points["group"] == TECHNOLOGY, "points"]
        highest = base + singles.max().sum() + techs.clip(lower=0).sum()
        lowest = base + singles.min().sum() + techs.clip(upper=0).sum()
        if lowest >= 0 and highest <= 100:
            break
        scale *= 0.95
    table = with_points[["trait", "value", "points", "coefficient"]].reset_index(drop=True)
    return PointsModel(base=base, points=table, scored_by="learned", intercept=intercept, scale=scale)


def feature_points(design: Design, model: PointsModel) -> np.ndarray:
    """The model's points for each column of the design (0 where the model has none)."""
    lookup = model.lookup()
    return np.array(
        [lookup.get((t, v), 0) for t, v in design.features[["trait", "value"]].itertuples(index=False)],
        dtype=np.int64,
    )


def account_scores(design: Design, model: PointsModel) -> np.ndarray:
    """Each account's score: base + the sum of its points (a sparse matrix-vector product)."""
    return np.asarray(model.base + design.matrix @ feature_points(design, model)).astype(np.int64)


def account_points(design: Design, model: PointsModel) -> tuple[np.ndarray, pd.DataFrame]:
    """Each account's score and its (account_id, trait, value, points) items with non-zero points."""
    vector = feature_points(design, model)
    scores = model.base + design.matrix @ vector
    coo = design.matrix.tocoo()
    item_points = vector[coo.col]
    keep = item_points != 0
    items = pd.DataFrame(
        {
            "account_id": design.account_ids.to_numpy()[coo.row[keep]],
            "trait": design.features["trait"].to_numpy()[coo.col[keep]],
            "value": design.features["value"].to_numpy()[coo.col[keep]],
            "points": item_points[keep],
        }
    )
    return np.asarray(scores).astype(np.int64), items


def no_signal_model(design: Design) -> PointsModel:
    """Every account scores 50: the evidence cannot tell fit from non-fit, and the score says so."""
    table = design.features[["trait", "value"]].assign(points=0, coefficient=0.0)
    return PointsModel(base=50, points=table, scored_by="no_signal", notes=["insufficient evidence"])


def written_icp_model(design: Design, criteria: list[tuple[str, tuple[str, ...]]]) -> PointsModel:
    """Cold start: points from the written ICP, 70 shared equally by its must-have criteria."""
    share = 70 / max(len(criteria), 1)
    table = design.features[["trait", "value"]].assign(points=0, coefficient=0.0)
    for trait, values in criteria:
        hit = (table["trait"] == trait) & table["value"].isin(values) & (table["value"] != UNKNOWN)
        # Several technologies can hit at once; split the share so a criterion never exceeds it.
        each = share / len(values) if trait == TECHNOLOGY else share
        table.loc[hit, "points"] = int(each)
    return PointsModel(base=30, points=table, scored_by="written_icp", notes=["cold start: written ICP"])
