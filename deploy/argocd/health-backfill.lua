-- Argo CD health check for recur.dev/Backfill (resource.customizations.health.recur.dev_Backfill).
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
  return { status = "Progressing", message = "Waiting for recur to observe the backfill" }
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  return { status = "Progressing", message = "Waiting for recur to observe generation " .. tostring(generation) }
end
local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")
if status.phase == "Failed" or (stalled ~= nil and stalled.status == "True") then
  local c = stalled
  if c == nil or c.status ~= "True" then
    c = ready
  end
  if c == nil then
    return { status = "Degraded", message = "Failed" }
  end
  return { status = "Degraded", message = describe(c) }
end
if status.phase == "Complete" then
  if ready ~= nil then
    return { status = "Healthy", message = describe(ready) }
  end
  return { status = "Healthy", message = "Complete" }
end
if ready == nil then
  return { status = "Progressing", message = "Waiting for the Ready condition" }
end
if ready.status == "True" then
  return { status = "Healthy", message = describe(ready) }
end
if ready.reason == "Backfilling" or ready.reason == "TaskNotFound" then
  return { status = "Progressing", message = describe(ready) }
end
if ready.reason == "TaskSuspended" then
  return { status = "Suspended", message = describe(ready) }
end
if ready.status == "False" then
  return { status = "Degraded", message = describe(ready) }
end
return { status = "Progressing", message = describe(ready) }
