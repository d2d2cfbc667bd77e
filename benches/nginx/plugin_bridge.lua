-- Kong's side of the plugin-server wire, for the nginx benchmark
-- (benches/nginx_bench.py). Written for this repository from the behaviour
-- described in docs/protocol.md, not taken from Kong: what matters is that
-- nginx does per request what Kong's plugin-server Lua does.
--
--   * every RPC checks a connection out of the worker's cosocket keep-alive
--     pool (LIFO, lua_socket_pool_size), writes one request, reads one
--     response with a fresh streaming decoder and puts the connection back:
--     consecutive Steps of one event travel on whatever connection the pool
--     hands out;
--   * requests are packed with lua-MessagePack (pure Lua) as Kong packs them;
--   * one RPC per PDK call: HandleEvent, then a Step (StepMultiMap for the
--     multi-map getters) with the value of the PDK function, run here against
--     the live request, until the server answers "ret";
--   * instance ids are cached per worker and started again after a
--     "no plugin instance" error.

local mp = require("MessagePack")

-- Kong's encoder settings (docs/protocol.md §3.2).
mp.set_string("string_compat")
mp.set_integer("unsigned")
mp.set_array("without_hole")

local ngx = ngx
local str_find = string.find

local _M = {}

local msgid = 0 -- per worker, as in Kong
local instances = {} -- plugin name -> instance id, per worker

local MULTI_MAP = {
    ["kong.request.get_headers"] = true,
    ["kong.request.get_query"] = true,
    ["kong.response.get_headers"] = true,
    ["kong.service.response.get_headers"] = true,
}

local function header_var(name)
    return ngx.var["http_" .. name:lower():gsub("-", "_")]
end

-- The PDK functions the benchmark plugins call, done for real on the live
-- request as Kong's PDK does them.
local pdk = {
    ["kong.request.get_header"] = header_var,
    ["kong.request.get_headers"] = function() return ngx.req.get_headers() end,
    ["kong.request.get_query"] = function() return ngx.req.get_uri_args() end,
    ["kong.request.get_path"] = function() return ngx.var.uri end,
    ["kong.request.get_method"] = function() return ngx.req.get_method() end,
    ["kong.request.get_scheme"] = function() return ngx.var.scheme end,
    ["kong.request.get_host"] = function() return ngx.var.host end,
    ["kong.client.get_ip"] = function() return ngx.var.remote_addr end,
    ["kong.log.debug"] = function(...) ngx.log(ngx.DEBUG, ...) end,
    ["kong.ctx.shared.set"] = function(k, v) ngx.ctx[k] = v end,
    ["kong.ctx.shared.get"] = function(k) return ngx.ctx[k] end,
    ["kong.service.request.set_header"] = function(k, v) ngx.req.set_header(k, v) end,
    ["kong.response.set_header"] = function(k, v) ngx.header[k] = v end,
    ["kong.response.add_header"] = function(k, v)
        local old = ngx.header[k]
        if old == nil then
            ngx.header[k] = v
        elseif type(old) == "table" then
            old[#old + 1] = v
            ngx.header[k] = old
        else
            ngx.header[k] = { old, v }
        end
    end,
}

local TERMINAL = {
    ["kong.response.exit"] = true,
    ["kong.response.error"] = true,
}

local function respond(status, body, headers)
    ngx.status = status
    if type(headers) == "table" then
        for k, v in pairs(headers) do
            ngx.header[k] = v
        end
    end
    if body ~= nil then
        ngx.print(body)
    end
    return ngx.exit(status)
end

-- One RPC on a pooled connection: the decoded result, or nil and an error.
local function call(socket_path, method, args)
    local sock = ngx.socket.tcp()
    local ok, err = sock:connect(socket_path)
    if not ok then
        return nil, "connect: " .. tostring(err)
    end
    msgid = msgid + 1
    local id = msgid
    local _, werr = sock:send(mp.pack({ 0, id, method, args }))
    if werr then
        sock:close()
        return nil, "send: " .. werr
    end
    local rerr
    local next_object = mp.unpacker(function()
        local chunk, e = sock:receiveany(65536)
        if not chunk then
            rerr = e
        end
        return chunk
    end)
    while true do
        local got, msg = next_object()
        if not got then
            sock:close()
            return nil, "receive: " .. tostring(rerr or "short message")
        end
        if type(msg) == "table" and msg[1] == 1 then
            if msg[2] ~= id then
                sock:close()
                return nil, "msgid mismatch"
            end
            sock:setkeepalive()
            if msg[3] ~= nil then
                return nil, msg[3]
            end
            return msg[4]
        end
        -- [2, label, args] notifications (serverPid) come before the reply.
    end
end

local function instance_id(plugin, socket_path, config)
    local id = instances[plugin]
    if id then
        return id
    end
    local res, err = call(socket_path, "plugin.StartInstance", { { Name = plugin, Config = config } })
    if not res then
        return nil, err
    end
    instances[plugin] = res.Id
    return res.Id
end

-- Runs one phase of `plugin` for the current request, Kong-style.
function _M.run(plugin, phase, socket_path, config)
    socket_path = "unix:" .. socket_path
    local res, err
    for _ = 1, 2 do
        local id
        id, err = instance_id(plugin, socket_path, config)
        if not id then
            break
        end
        res, err = call(socket_path, "plugin.HandleEvent", { { InstanceId = id, EventName = phase } })
        if res or not str_find(tostring(err), "no plugin instance", 1, true) then
            break
        end
        instances[plugin] = nil
    end
    while res do
        local data = res.Data
        if data == "ret" then
            return
        end
        local method, args = data.Method, data.Args
        if type(args) ~= "table" then
            args = { args }
        end
        if TERMINAL[method] then
            return respond(args[1], args[2], args[3])
        end
        local fn = pdk[method]
        local value
        if fn then
            value = fn(unpack(args))
        else
            ngx.log(ngx.ERR, "could not find pdk method: ", method)
        end
        local step = MULTI_MAP[method] and "plugin.StepMultiMap" or "plugin.Step"
        res, err = call(socket_path, step, { { EventId = res.EventId, Data = value } })
    end
    ngx.log(ngx.ERR, "plugin server: ", tostring(err))
    return ngx.exit(500)
end

return _M
