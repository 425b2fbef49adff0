"""BaselinePolicy status: conditions and counts, stable when nothing changes."""

from __future__ import annotations

from typing import Any

from nsbaseline.assessment import Assessment, Failure
from nsbaseline.status import MAX_ENTRIES, policy_status

T1 = "2030-01-01T00:00:00Z"
T2 = "2030-01-01T00:05:00Z"


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def compliant(ns: str) -> Assessment:
    return Assessment("base", ns, "compliant", "", managed=2)


def test_all_compliant_is_ready_and_not_degraded() -> None:
    status = policy_status(3, False, [compliant("a"), compliant("b")], {}, T1)
    assert status["observedGeneration"] == 3
    assert (status["matchedNamespaces"], status["compliantNamespaces"]) == (2, 2)
    assert (status["conflictingNamespaces"], status["failedNamespaces"]) == (0, 0)
    ready, degraded = conditions(status)["Ready"], conditions(status)["Degraded"]
    assert (ready["status"], ready["reason"]) == ("True", "Compliant")
    assert (degraded["status"], degraded["reason"]) == ("False", "AsExpected")
    assert ready["observedGeneration"] == degraded["observedGeneration"] == 3
    assert ready["lastTransitionTime"] == T1
    assert status["conflicts"] == status["errors"] == status["pendingChanges"] == []


def test_no_selected_namespace_is_ready() -> None:
    ready = conditions(policy_status(1, False, [], {}, T1))["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "NoNamespacesSelected")


def test_pending_writes_are_progressing_not_degraded() -> None:
    status = policy_status(
        1, False, [compliant("a"), Assessment("base", "b", "drifted", "")], {}, T1
    )
    ready, degraded = conditions(status)["Ready"], conditions(status)["Degraded"]
    assert (ready["status"], ready["reason"]) == ("False", "Progressing")
    assert ready["message"] == "1 of 2 namespace(s) compliant."
    assert degraded["status"] == "False"


def test_template_error_degrades_with_template_and_namespace_in_the_message() -> None:
    failed = Assessment(
        "base",
        "team-b",
        "error",
        "",
        errors=(
            Failure(
                "allow-dns", "template 'allow-dns' for namespace 'team-b': undefined", "template"
            ),
        ),
    )
    status = policy_status(1, False, [compliant("a"), failed], {}, T1)
    ready, degraded = conditions(status)["Ready"], conditions(status)["Degraded"]
    assert (ready["status"], ready["reason"]) == ("False", "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "TemplateError")
    assert "template 'allow-dns' for namespace 'team-b'" in degraded["message"]
    assert status["failedNamespaces"] == 1
    assert status["errors"] == [
        {
            "namespace": "team-b",
            "template": "allow-dns",
            "message": "template 'allow-dns' for namespace 'team-b': undefined",
        }
    ]


def test_conflict_degrades_and_names_the_foreign_object() -> None:
    clash = Assessment(
        "base", "team-c", "conflict", "", conflicts=("nsbaseline-base-default-deny",)
    )
    status = policy_status(1, False, [clash], {}, T1)
    degraded = conditions(status)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "Conflict")
    assert "team-c/nsbaseline-base-default-deny" in degraded["message"]
    assert status["conflictingNamespaces"] == 1
    assert status["conflicts"] == [{"namespace": "team-c", "name": "nsbaseline-base-default-deny"}]


def test_errors_take_precedence_over_conflicts_in_the_reason() -> None:
    outcomes = [
        Assessment("base", "a", "conflict", "", conflicts=("x",)),
        Assessment("base", "b", "error", "", errors=(Failure("t", "boom", "template"),)),
    ]
    degraded = conditions(policy_status(1, False, outcomes, {}, T1))["Degraded"]
    assert degraded["reason"] == "TemplateError"
    assert "1 error(s)" in degraded["message"] and "1 conflict(s)" in degraded["message"]


def test_last_transition_time_is_kept_while_status_does_not_flip() -> None:
    first = policy_status(1, False, [compliant("a")], {}, T1)
    again = policy_status(2, False, [compliant("a"), compliant("b")], first, T2)
    ready = conditions(again)["Ready"]
    assert ready["lastTransitionTime"] == T1
    assert ready["observedGeneration"] == 2
    assert ready["message"] == "All 2 namespace(s) are compliant."
    assert conditions(again)["Degraded"]["lastTransitionTime"] == T1


def test_last_transition_time_moves_when_status_flips() -> None:
    first = policy_status(1, False, [compliant("a")], {}, T1)
    broken = policy_status(
        1,
        False,
        [Assessment("base", "a", "error", "", errors=(Failure("t", "m", "write"),))],
        first,
        T2,
    )
    assert conditions(broken)["Ready"]["lastTransitionTime"] == T2
    assert conditions(broken)["Degraded"]["lastTransitionTime"] == T2


def test_unchanged_situation_gives_an_identical_status() -> None:
    outcomes = [compliant("b"), Assessment("base", "a", "conflict", "", conflicts=("n",))]
    first = policy_status(4, False, outcomes, {}, T1)
    assert policy_status(4, False, list(reversed(outcomes)), first, T2) == first


def test_audit_mode_reports_pending_changes_and_stays_ready_as_an_audit() -> None:
    pending = Assessment(
        "base",
        "a",
        "audit-pending",
        "",
        pending=(("nsbaseline-base-allow-dns", "Create"), ("nsbaseline-base-old", "Delete")),
    )
    status = policy_status(1, True, [pending, compliant("b")], {}, T1)
    ready = conditions(status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "ChangesPending")
    assert "2 change(s) pending in 2 namespace(s)" in ready["message"]
    assert conditions(status)["Degraded"]["status"] == "False"
    assert status["pendingChanges"] == [
        {"namespace": "a", "name": "nsbaseline-base-allow-dns", "action": "Create"},
        {"namespace": "a", "name": "nsbaseline-base-old", "action": "Delete"},
    ]
    assert status["compliantNamespaces"] == 1


def test_audit_mode_with_nothing_to_change_is_ready() -> None:
    ready = conditions(policy_status(1, True, [compliant("a")], {}, T1))["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "AuditClean")


def test_entry_lists_are_capped_but_counts_are_not() -> None:
    outcomes = [
        Assessment(
            "base", f"ns-{i:03}", "conflict", "", conflicts=("nsbaseline-base-default-deny",)
        )
        for i in range(MAX_ENTRIES + 10)
    ]
    status = policy_status(1, False, outcomes, {}, T1)
    assert status["conflictingNamespaces"] == MAX_ENTRIES + 10
    assert len(status["conflicts"]) == MAX_ENTRIES
    assert status["conflicts"][0]["namespace"] == "ns-000"  # sorted by namespace


def test_stalled_mirrors_degraded_for_kstatus_readers() -> None:
    clash = Assessment(
        "base", "team-c", "conflict", "", conflicts=("nsbaseline-base-default-deny",)
    )
    for outcomes in ([clash], [compliant("a")]):
        found = conditions(policy_status(2, False, outcomes, {}, T1))
        degraded, stalled = found["Degraded"], found["Stalled"]
        assert {k: v for k, v in stalled.items() if k != "type"} == {
            k: v for k, v in degraded.items() if k != "type"
        }
