-- Argo CD health check for recur.dev/RecurringTask (resource.customizations.health.recur.dev_RecurringTask).
-- Runs without Lua's string library (Argo CD's default for argocd-cm scripts): only base, table and os.
local function condition(status, type)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil then
  return { status = "Progressing", message = "Waiting for recur to observe the task" }
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  return { status = "Progressing", message = "Waiting for recur to observe generation " .. tostring(generation) }
end
local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  return { status = "Degraded", message = describe(stalled) }
end
local suspended = condition(status, "Suspended")
if obj.spec ~= nil and obj.spec.suspend == true then
  if suspended ~= nil and suspended.status == "True" then
    return { status = "Suspended", message = describe(suspended) }
  end
  return { status = "Suspended", message = "spec.suspend is true" }
end
local ready = condition(status, "Ready")
if ready == nil then
  return { status = "Progressing", message = "Waiting for the Ready condition" }
end
if ready.status == "True" then
  return { status = "Healthy", message = describe(ready) }
end
if ready.status == "False" then
  return { status = "Degraded", message = describe(ready) }
end
return { status = "Progressing", message = describe(ready) }
