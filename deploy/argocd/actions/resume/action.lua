-- Resumes deliveries: spec.suspend = false, and suspendReason cleared.
obj.spec.suspend = false
obj.spec.suspendReason = nil
return obj
