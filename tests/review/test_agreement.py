"""Cohen's kappa (plain and quadratic-weighted) against values worked out by hand, and agreement on a
score config between reviewers and between an automated score and the reviewers."""

from __future__ import annotations

import pytest

from pilothouse.quality.review import cohens_kappa, config_agreement, weighted_kappa


def test_kappa_of_a_two_by_two_table_worked_by_hand() -> None:
    # 50 items: both yes 20, a yes / b no 5, a no / b yes 10, both no 15.
    # p_o = 35/50 = 0.7; a says yes 25/50, b says yes 30/50: p_e = 0.5*0.6 + 0.5*0.4 = 0.5
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    assert cohens_kappa(pairs) == pytest.approx(0.4)


def test_kappa_of_three_labels_worked_by_hand() -> None:
    # rows a, columns b over (x, y, z): [[2, 1, 0], [0, 2, 1], [1, 0, 3]], n = 10
    # p_o = 7/10; a's margins 3, 3, 4; b's 3, 3, 4: p_e = (9 + 9 + 16) / 100 = 0.34
    # kappa = (0.7 - 0.34) / 0.66 = 0.5454...
    table = {("x", "x"): 2, ("x", "y"): 1, ("y", "y"): 2, ("y", "z"): 1, ("z", "x"): 1, ("z", "z"): 3}
    pairs = [pair for pair, count in table.items() for _ in range(count)]
    assert cohens_kappa(pairs) == pytest.approx(0.36 / 0.66)


def test_kappa_edges() -> None:
    assert cohens_kappa([("a", "a")]) is None  # one item says nothing
    assert cohens_kappa([("a", "a"), ("a", "a")]) is None  # chance agreement is total: undefined
    assert cohens_kappa([("a", "b"), ("b", "a")]) == pytest.approx(-1.0)  # always opposite
    assert cohens_kappa([("a", "a"), ("b", "b"), ("a", "a")]) == pytest.approx(1.0)


def test_quadratic_weighted_kappa_worked_by_hand() -> None:
    # pairs (1,1), (2,3), (3,3) on a 1-3 scale (span 2): weights ((x - y) / 2)^2
    # observed disagreement = (0 + 0.25 + 0) / 3 = 1/12
    # a's values 1, 2, 3; b's 1, 3, 3: expected = sum over 9 cross pairs / 9
    #   a=1: (1,1) 0, (1,3) 1, (1,3) 1 -> 2; a=2: 0.25, 0.25, 0.25 -> 0.75; a=3: 1, 0, 0 -> 1
    #   expected = 3.75 / 9 = 5/12; kappa = 1 - (1/12) / (5/12) = 0.8
    assert weighted_kappa([(1, 1), (2, 3), (3, 3)], span=2) == pytest.approx(0.8)
    assert weighted_kappa([(2, 2), (2, 2)], span=4) is None


def test_config_agreement_pairs_reviewers_and_automated_sources() -> None:
    human = [
        ("t1", "alice", "true"), ("t1", "bob", "true"),
        ("t2", "alice", "false"), ("t2", "bob", "false"),
        ("t3", "alice", "true"), ("t3", "bob", "false"),
        ("t4", "alice", "false"),
    ]  # fmt: skip
    judge = [
        ("t1", "judge", "true"),
        ("t2", "judge", "true"),
        ("t4", "judge", "false"),
        ("t9", "judge", "true"),
    ]
    report = config_agreement("helpful", human, judge)
    (pair,) = report.reviewers
    # alice vs bob on t1-t3: agree, agree, differ; alice yes 2/3, bob yes 1/3:
    # p_o = 2/3, p_e = 2/3*1/3 + 1/3*2/3 = 4/9, kappa = (2/3 - 4/9) / (5/9) = 0.4
    assert (pair.rater_a, pair.rater_b, pair.n) == ("alice", "bob", 3)
    assert pair.kappa == pytest.approx(0.4) and report.pooled.kappa == pytest.approx(0.4)
    (auto,) = report.automated
    # the judge against each reviewer of its items: t1 (T,T)(T,T), t2 (T,F)(T,F), t4 (F,F); t9 unreviewed
    # pairs (judge, person): TT, TT, TF, TF, FF -> p_o 3/5; judge T 4/5, people T 2/5:
    # p_e = 4/5*2/5 + 1/5*3/5 = 11/25; kappa = (15/25 - 11/25) / (14/25) = 2/7
    assert auto.rater_a == "judge" and auto.n == 5 and auto.kappa == pytest.approx(2 / 7)
    assert report.as_dict()["kappa_kind"] == "cohen"
