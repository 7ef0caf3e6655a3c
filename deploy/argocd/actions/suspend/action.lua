-- Suspends deliveries: spec.suspend = true, with a suspendReason naming Argo CD.
obj.spec.suspend = true
obj.spec.suspendReason = "suspended from Argo CD on " .. os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
