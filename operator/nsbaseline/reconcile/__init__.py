"""The reconcile machinery: one namespace's story in :mod:`.reconciler`, each job in a module.

``queue`` (which namespace next), ``objects`` (our NetworkPolicies as watched), ``written``
(our writes the watch has not shown yet), ``executor`` (sending a plan), ``status_book``
(BaselinePolicy status), ``events`` (Events), ``gate`` (peering: may this replica write).
"""
