-- Argo CD resource actions for recur.dev/RecurringTask: run-now, suspend, resume.
local actions = {}
local suspended = obj.spec ~= nil and obj.spec.suspend == true
-- recur refuses a manual run of a suspended task (RunRefused), so run-now waits for resume.
actions["run-now"] = { ["disabled"] = suspended }
actions["suspend"] = { ["disabled"] = suspended }
actions["resume"] = { ["disabled"] = not suspended }
return actions
