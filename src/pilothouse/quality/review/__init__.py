"""Human review: score configs, annotation queues, the review screen's use cases, reviewers, corrected
outputs sent to datasets, and agreement (Cohen's kappa) that feeds judge calibration."""

from pilothouse.domain.review import (
    ItemStatus,
    Review,
    Reviewer,
    ReviewError,
    ReviewItem,
    ReviewQueue,
    ReviewScore,
    ScoreConfig,
    ScoreKind,
)
from pilothouse.quality.review._agreement import (
    Agreement,
    ConfigAgreement,
    cohens_kappa,
    config_agreement,
    weighted_kappa,
)
from pilothouse.quality.review._labels import calibration_rows
from pilothouse.quality.review._passwords import hash_password, verify_password
from pilothouse.quality.review._service import ReviewService
from pilothouse.quality.review._view import ItemView, ReviewNotFound

__all__ = [
    "Agreement",
    "ConfigAgreement",
    "ItemStatus",
    "ItemView",
    "Review",
    "ReviewError",
    "ReviewItem",
    "ReviewNotFound",
    "ReviewQueue",
    "ReviewScore",
    "ReviewService",
    "Reviewer",
    "ScoreConfig",
    "ScoreKind",
    "calibration_rows",
    "cohens_kappa",
    "config_agreement",
    "hash_password",
    "verify_password",
    "weighted_kappa",
]
