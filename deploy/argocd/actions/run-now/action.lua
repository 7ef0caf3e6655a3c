-- Sets the recur.dev/run-now annotation to a fresh token: recur delivers one occurrence now, once
-- per token. The token, "argocd-" and the UTC time to the second, matches [a-z0-9-]{1,63}.
-- (Not os.date(fmt, os.time()): Argo CD's os.date then formats local time, even with "!".)
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local token = "argocd-" .. os.date("!%Y%m%d-%H%M%S")
if obj.metadata.annotations["recur.dev/run-now"] == token then
  -- Pressed twice within a second: another token, so the second press runs too.
  token = token .. "-2"
end
obj.metadata.annotations["recur.dev/run-now"] = token
return obj
