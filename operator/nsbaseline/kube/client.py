"""The calls the operator and the CLI make, resource by resource (the transport is beneath).

Creates are POSTs; updates are server-side applies under our field manager (force: we own our
fields); deletes carry a UID precondition (never a same-named object that replaced ours); status
is a merge patch; Events are core/v1; compliance reports are server-side applied.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from nsbaseline import names
from nsbaseline.kube.errors import ApiError
from nsbaseline.kube.transport import ATTEMPTS, PAGE_SIZE, Transport

NP_PATH = "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
POLICY_PATH = f"/apis/{names.GROUP}/{names.VERSION}/{names.PLURAL}"


class KubeClient(Transport):
    """Async API client: the resource calls of nsbaseline over one :class:`Transport`."""

    # ----- NetworkPolicies ------------------------------------------------------------------
    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a new NetworkPolicy (409 AlreadyExists when the name is taken)."""
        path = NP_PATH.format(namespace=body["metadata"]["namespace"])
        result: dict[str, Any] = await self.request(
            "POST", path, params={"fieldManager": names.FIELD_MANAGER}, body=body, lean=True
        )
        return result

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One NetworkPolicy, or None when there is none by that name."""
        try:
            result: dict[str, Any] = await self.request(
                "GET", NP_PATH.format(namespace=namespace) + "/" + name
            )
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        return result

    async def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply ``body`` as field manager ``nsbaseline`` (force: we own our fields)."""
        meta = body["metadata"]
        path = NP_PATH.format(namespace=meta["namespace"]) + "/" + meta["name"]
        result: dict[str, Any] = await self.request(
            "PATCH",
            path,
            params={"fieldManager": names.FIELD_MANAGER, "force": "true"},
            body=body,
            content_type="application/apply-patch+yaml",
            lean=True,
        )
        return result

    async def replace_spec(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Overwrite the whole spec; for fields another manager added that apply cannot drop.

        The ``test`` of resourceVersion makes it fail rather than clobber a concurrent change.
        """
        path = NP_PATH.format(namespace=namespace) + "/" + name
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "replace", "path": "/spec", "value": spec},
        ]
        result: dict[str, Any] = await self.request(
            "PATCH",
            path,
            params={"fieldManager": names.FIELD_MANAGER},
            body=patch,
            content_type="application/json-patch+json",
            lean=True,
        )
        return result

    async def delete(self, namespace: str, name: str, uid: str | None) -> bool:
        """Delete only the object with ``uid``; ``False`` if it is already gone."""
        path = NP_PATH.format(namespace=namespace) + "/" + name
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", path, body=body, lean=True)
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return True

    async def list_network_policies(
        self, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Every NetworkPolicy (optionally label-selected), and the listing's resourceVersion."""
        params = {"labelSelector": label_selector} if label_selector else None
        return await self.list_all("/apis/networking.k8s.io/v1/networkpolicies", params)

    # ----- BaselinePolicies, Namespaces, Pods -----------------------------------------------
    async def list_policies(self) -> list[dict[str, Any]]:
        return (await self.list_all(POLICY_PATH))[0]

    async def list_namespaces(self) -> list[dict[str, Any]]:
        return (await self.list_all("/api/v1/namespaces"))[0]

    async def list_pods(self) -> list[dict[str, Any]]:
        return (await self.list_all("/api/v1/pods"))[0]

    async def list_admission(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """ValidatingAdmissionPolicies and their bindings (for ``nsbaseline status``)."""
        base = "/apis/admissionregistration.k8s.io/v1/"
        vaps, _ = await self.list_all(base + "validatingadmissionpolicies")
        bindings, _ = await self.list_all(base + "validatingadmissionpolicybindings")
        return vaps, bindings

    async def patch_policy_status(self, name: str, status: Mapping[str, Any]) -> None:
        """Replace the status lists and counters (merge patch; only called on real change)."""
        await self.request(
            "PATCH",
            f"{POLICY_PATH}/{name}/status",
            params={"fieldManager": names.FIELD_MANAGER},
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    # ----- compliance reports (PolicyReport or OpenReports Report) ----------------------------
    async def list_reports(
        self, group: str, version: str, plural: str, label_selector: str
    ) -> list[dict[str, Any]]:
        """Every report of that kind carrying ``label_selector``, in all namespaces (paginated)."""
        params = {"labelSelector": label_selector}
        return (await self.list_all(f"/apis/{group}/{version}/{plural}", params))[0]

    async def apply_report(
        self, group: str, version: str, plural: str, body: Mapping[str, Any]
    ) -> None:
        """Server-side apply one report as field manager ``nsbaseline`` (creates it if missing)."""
        meta = body["metadata"]
        await self.request(
            "PATCH",
            f"/apis/{group}/{version}/namespaces/{meta['namespace']}/{plural}/{meta['name']}",
            params={"fieldManager": names.FIELD_MANAGER, "force": "true"},
            body=body,
            content_type="application/apply-patch+yaml",
            lean=True,
        )

    async def delete_report(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> None:
        """Delete one report; one already gone is fine."""
        try:
            await self.request(
                "DELETE",
                f"/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
                lean=True,
            )
        except ApiError as exc:
            if not exc.not_found:
                raise

    # ----- Events ---------------------------------------------------------------------------
    async def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        reason: str,
        message: str,
        type_: str = "Normal",
    ) -> None:
        namespace = involved.get("namespace") or self.credentials.default_namespace
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{involved.get('name', 'nsbaseline')}.",
                "namespace": namespace,
            },
            "involvedObject": dict(involved),
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "nsbaseline"},
            "reportingComponent": "nsbaseline",
            "reportingInstance": "nsbaseline",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event, lean=True)

    async def check_access(self) -> None:
        """Fail early, with the API server's own answer, when the basics cannot be read.

        One small paginated GET per resource the operator lists: the CRD must be installed and
        the credentials must allow listing. Raises :class:`ApiError`/:class:`UnreachableError`.
        """
        for path in (
            POLICY_PATH,
            "/api/v1/namespaces",
            "/apis/networking.k8s.io/v1/networkpolicies",
        ):
            await self.request("GET", path, params={"limit": "1"})


__all__ = ["ATTEMPTS", "NP_PATH", "PAGE_SIZE", "POLICY_PATH", "KubeClient"]
