"""Band edges shared by the demo generator, evidence and scoring, so a trait means the same everywhere."""

from __future__ import annotations

import numpy as np
import pandas as pd

EMPLOYEE_EDGES: tuple[float, ...] = (1, 11, 51, 201, 1001, 5001, np.inf)
EMPLOYEE_LABELS: tuple[str, ...] = ("1-10", "11-50", "51-200", "201-1000", "1001-5000", "5001+")

REVENUE_EDGES: tuple[float, ...] = (0, 1e6, 10e6, 50e6, 250e6, 1e9, np.inf)
REVENUE_LABELS: tuple[str, ...] = ("<1M", "1M-10M", "10M-50M", "50M-250M", "250M-1B", "1B+")

COMPANY_AGE_EDGES: tuple[float, ...] = (0, 3, 6, 11, 21, np.inf)
COMPANY_AGE_LABELS: tuple[str, ...] = ("0-2y", "3-5y", "6-10y", "11-20y", "21y+")


def _band(values: pd.Series, edges: tuple[float, ...], labels: tuple[str, ...]) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    return pd.cut(numeric, bins=list(edges), labels=list(labels), right=False)


def employee_band(employee_count: pd.Series) -> pd.Series:
    """Categorical employee band; counts below 1 or missing give NaN."""
    return _band(employee_count, EMPLOYEE_EDGES, EMPLOYEE_LABELS)


def revenue_band(annual_revenue: pd.Series) -> pd.Series:
    """Categorical revenue band in USD; negative or missing give NaN."""
    return _band(annual_revenue, REVENUE_EDGES, REVENUE_LABELS)


def company_age_band(age_years: pd.Series) -> pd.Series:
    """Categorical company-age band in whole years."""
    return _band(age_years, COMPANY_AGE_EDGES, COMPANY_AGE_LABELS)
