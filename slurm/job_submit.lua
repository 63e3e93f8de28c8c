--[[
job_submit.lua: makes QPUs schedulable. A job submitted with --qpu=a,b gets the Slurm licenses
a:1,b:1 (merged with the user's own --licenses), so it waits in Slurm's queue with Reason
"Licenses" while another job holds the QPU, instead of holding nodes while it waits.

A user may ask for more licenses of a QPU (--licenses=emu:2), never fewer than one; a user's
"scontrol update job=J licenses=..." keeps one license of each QPU of a --qpu job (root and
SlurmUser may change them). The helper run by the SPANK plugin refuses a QPU whose license
slurmctld did not grant the job, so a job submitted without --qpu cannot use one.

An unknown QPU name is rejected at submit time with the list of valid QPUs. The list comes from
qrmi_qpus.lua next to this file, generated from qrmi_config.json by
    qrmi slurm licenses --lua-data /etc/slurm/qrmi_qpus.lua
together with the slurm.conf "Licenses=" line. The data file is read on every --qpu
submission, so regenerating it needs no reconfigure (a changed Licenses= line does).

A --qpu job for a QPU that "qrmi slurm sync --lua-data /etc/slurm/qrmi_held.lua" holds (offline,
paused, unreachable) is accepted with a message that says why it will wait.

A --qpu job of a user or account that has used up a QPU-seconds quota of the QRMI gateway on one
of its QPUs is refused, with the quota's reason (limit, usage, when it resets), before any node
is allocated. The same sync writes who is over quota to qrmi_quota.lua next to qrmi_held.lua
(it asks the gateway named by the QPUs' QRMI_GATEWAY_URL); no file means nobody is.

Setup: slurm.conf JobSubmitPlugins=lua; this file and qrmi_qpus.lua in slurm.conf's directory.
Lua 5.1. job_desc.spank_job_env is indexed from 0: iterate with pairs, not ipairs.
]]

local PLUGIN_OPTION = "_SLURM_SPANK_OPTION_qrmi_qpu="
local DATA_FILE = "qrmi_qpus.lua"
-- QPUs that "qrmi slurm sync --lua-data" holds (name -> why); no file means none held.
local HELD_FILE = "qrmi_held.lua"
-- Who is over a QPU-seconds quota, per QPU (written by the same sync); no file: nobody.
local QUOTA_FILE = "qrmi_quota.lua"

local function script_dir()
    local source = debug.getinfo(1, "S").source
    return source:match("^@(.*/)") or "/etc/slurm/"
end

local function load_qpus()
    local chunk, err = loadfile(script_dir() .. DATA_FILE)
    if not chunk then
        return nil, err
    end
    local ok, qpus = pcall(chunk)
    if not ok or type(qpus) ~= "table" then
        return nil, "it does not return a list of names"
    end
    local known = {}
    for _, name in pairs(qpus) do
        known[name] = true
    end
    return known, qpus
end

-- A generated data file's table; a missing or broken file is an empty table.
local function data_table(file)
    local chunk = loadfile(script_dir() .. file)
    if not chunk then
        return {}
    end
    local ok, data = pcall(chunk)
    if not ok or type(data) ~= "table" then
        return {}
    end
    return data
end

local function held_qpus()
    return data_table(HELD_FILE)
end

-- A field of the job request, nil when this Slurm does not know it.
local function request_field(job_desc, name)
    local ok, value = pcall(function()
        return job_desc[name]
    end)
    if ok then
        return value
    end
    return nil
end

local function lookup(map, key)
    if type(map) ~= "table" or key == nil then
        return nil
    end
    local why = map[key]
    if type(why) == "string" then
        return why
    end
    return nil
end

-- Why the job's user or account may not use one of these QPUs now (a used-up QPU-seconds
-- quota), or nil. The user is matched by name and by uid, the account by the job's account or
-- else the user's default account.
local function quota_refusal(job_desc, submit_uid, names)
    local over = data_table(QUOTA_FILE)
    if next(over) == nil then
        return nil
    end
    local user = request_field(job_desc, "user_name")
    local uid = tonumber(request_field(job_desc, "user_id"))
    if uid == nil or uid >= 4294967294 then
        uid = submit_uid
    end
    local account = request_field(job_desc, "account") or request_field(job_desc, "default_account")
    for _, name in ipairs(names) do
        local entry = over[name]
        if type(entry) == "table" then
            local why = lookup(entry.users, user) or lookup(entry.uids, uid)
                or lookup(entry.accounts, account)
            if why ~= nil then
                return why
            end
        end
    end
    return nil
end

local function requested_qpus(job_desc)
    local env = job_desc.spank_job_env
    if env == nil then
        return nil
    end
    for _, entry in pairs(env) do
        if type(entry) == "string" and entry:sub(1, #PLUGIN_OPTION) == PLUGIN_OPTION then
            return entry:sub(#PLUGIN_OPTION + 1)
        end
    end
    return nil
end

local function split_names(text)
    local names, seen = {}, {}
    for name in text:gmatch("[^,]+") do
        if not seen[name] then
            seen[name] = true
            names[#names + 1] = name
        end
    end
    return names
end

-- Every QPU of the job holds at least one license: "a:0,b:3,x:2" plus QPUs {a, b, c} ->
-- "a:1,b:3,x:2,c:1". A user may ask for more licenses of a QPU, never fewer than one.
local function merge_licenses(existing, names)
    local wanted, parts, have = {}, {}, {}
    for _, name in ipairs(names) do
        wanted[name] = true
    end
    if existing ~= nil and existing ~= "" then
        for item in existing:gmatch("[^,]+") do
            local name, count = item:match("^([^:]+):?(.*)$")
            if name ~= nil and wanted[name] then
                local n = tonumber(count)
                if count == "" then
                    n = 1
                end
                if n == nil or n < 1 or n ~= math.floor(n) then
                    item = name .. ":1"
                end
                have[name] = true
            end
            parts[#parts + 1] = item
        end
    end
    for _, name in ipairs(names) do
        if not have[name] then
            parts[#parts + 1] = name .. ":1"
        end
    end
    return table.concat(parts, ",")
end

local function sorted_names(list)
    local copy = {}
    for _, name in pairs(list) do
        copy[#copy + 1] = name
    end
    table.sort(copy)
    return table.concat(copy, ", ")
end

function slurm_job_submit(job_desc, part_list, submit_uid)
    local value = requested_qpus(job_desc)
    if value == nil then
        return slurm.SUCCESS
    end
    local known, list = load_qpus()
    if known == nil then
        slurm.log_error("qrmi: cannot load %s%s: %s", script_dir(), DATA_FILE, tostring(list))
        slurm.log_user("qrmi: --qpu is unavailable: the QPU list of this cluster is missing; "
            .. "ask your administrator (qrmi slurm licenses --lua-data)")
        return slurm.ERROR
    end
    local names = split_names(value)
    for _, name in ipairs(names) do
        if not known[name] then
            slurm.log_user(string.format("qrmi: unknown QPU '%s' in --qpu=%s; valid QPUs are: %s",
                name, value, sorted_names(list)))
            return slurm.ERROR
        end
    end
    local refusal = quota_refusal(job_desc, submit_uid, names)
    if refusal ~= nil then
        -- "%s": the reason is data, never a format string
        slurm.log_user("%s", "qrmi: --qpu=" .. value .. " refused: " .. refusal)
        return slurm.ERROR
    end
    job_desc.licenses = merge_licenses(job_desc.licenses, names)
    local held = held_qpus()
    for _, name in ipairs(names) do
        if type(held[name]) == "string" then
            -- "%s": the reason is the vendor's text, never a format string
            slurm.log_user("%s", string.format("qrmi: QPU %s is %s; the job waits (Reason "
                .. "Licenses) until it is back (sinfo -T, qrmi slurm status)", name, held[name]))
        end
    end
    slurm.log_debug("qrmi: --qpu=%s -> licenses %s", value, job_desc.licenses)
    return slurm.SUCCESS
end

-- The uid slurmctld runs as (SlurmUser): an admin, like root.
local function slurm_user_uid()
    local file = io.open("/proc/self/status", "r")
    if file == nil then
        return 0
    end
    local uid = 0
    for line in file:lines() do
        local real = line:match("^Uid:%s+(%d+)")
        if real ~= nil then
            uid = tonumber(real)
            break
        end
    end
    file:close()
    return uid
end

-- The QPUs of an existing job: its --qpu option as the job record keeps it, else the QPU
-- licenses it holds (a Slurm without spank_job_env in the Lua job record).
local function job_qpus(job_rec)
    local ok, env = pcall(function()
        return job_rec.spank_job_env
    end)
    if ok and type(env) == "table" then
        for _, entry in pairs(env) do
            if type(entry) == "string" and entry:sub(1, #PLUGIN_OPTION) == PLUGIN_OPTION then
                return split_names(entry:sub(#PLUGIN_OPTION + 1))
            end
        end
        return {}
    end
    local known = load_qpus()
    local names = {}
    if known ~= nil and job_rec.licenses ~= nil then
        for item in job_rec.licenses:gmatch("[^,]+") do
            local name = item:match("^([^:]+)")
            if name ~= nil and known[name] then
                names[#names + 1] = name
            end
        end
    end
    return names
end

-- A user changing the licenses of a --qpu job keeps one license of each of its QPUs (or asks
-- for more); root and SlurmUser may change them freely.
function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
    if job_desc.licenses == nil or modify_uid == 0 or modify_uid == slurm_user_uid() then
        return slurm.SUCCESS
    end
    local names = job_qpus(job_rec)
    if #names == 0 then
        return slurm.SUCCESS
    end
    local kept = merge_licenses(job_desc.licenses, names)
    if kept ~= job_desc.licenses then
        slurm.log_user(string.format("qrmi: job %s keeps a license of each of its QPUs (%s): "
            .. "licenses=%s", tostring(job_rec.job_id), table.concat(names, ","), kept))
        job_desc.licenses = kept
    end
    return slurm.SUCCESS
end

return slurm.SUCCESS
