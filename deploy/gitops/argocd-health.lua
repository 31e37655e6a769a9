-- Argo CD health check for clustersync.io/ClusterSync (Lua 5.1, as Argo CD runs it).
-- Install it under resource.customizations.health.clustersync.io_ClusterSync in argocd-cm
-- (argocd-cm-patch.yaml in this directory carries this same script).
--
-- Healthy:     committed, or caught up (the sync can be committed whenever you choose)
-- Progressing: the operator has not caught up with the spec yet, the engine is starting,
--              or the initial copy / catch-up is under way
-- Suspended:   IDLE (not started) or PAUSED, as the spec asks
-- Degraded:    Ready=False for a reason the user must fix (missing Secret or roles, bad
--              connection string, invalid spec, an engine refusal, a stopped sync)
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- Ready=False reasons that only mean "not there yet".
local waiting = {
  Pending = true,
  EngineNotScheduled = true,
  EngineNotReady = true,
}

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the clustersync operator to reconcile this ClusterSync"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on the latest spec"
  return hs
end

local ready = condition(obj.status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator's first report"
  return hs
end

if ready.status ~= "True" then
  if waiting[ready.reason] then
    hs.status = "Progressing"
  else
    hs.status = "Degraded"
  end
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
  return hs
end

local state = obj.status.state or "UNKNOWN"
if state == "COMMITTED" then
  hs.status = "Healthy"
  hs.message = "Committed: the destination accepts writes"
  return hs
end
if state == "IDLE" or state == "PAUSED" then
  hs.status = "Suspended"
  hs.message = state .. " (spec.mode " .. tostring(obj.spec and obj.spec.mode) .. ")"
  return hs
end

local insync = condition(obj.status.conditions, "InSync")
if insync ~= nil and insync.status == "True" then
  hs.status = "Healthy"
else
  hs.status = "Progressing"
end
if insync ~= nil then
  hs.message = state .. ": " .. (insync.message or "")
else
  hs.message = state
end
return hs
