-- Kong's side of ProtoBuf:1, for the nginx benchmark's ProtoBuf:1 rows
-- (benches/nginx_bench.py). Written for this repository from the wire as
-- docs/protobuf.md describes it; what matters is that nginx does per request
-- what Kong's plugin-server Lua does on that wire:
--
--   * one connection per event, checked out of the worker's cosocket
--     keep-alive pool and put back after the RpcReturn;
--   * lua-protobuf (C) encodes and decodes, with the schema loaded from
--     src/protobuf/pluginsocket.proto at the worker's first request;
--   * a frame is its 4-byte length then its message, sent in two sends as
--     Kong sends them;
--   * during the event: a method-name frame and an argument frame from the
--     server, the PDK function run here on the live request, its result
--     frame back (empty for nil), until an empty method name;
--   * instance ids cached per worker, started again when the server closes
--     the connection of a HandleEvent.

local pb = require("pb")
local protoc = require("protoc")
local ffi = require("ffi")

local ngx = ngx

local _M = {}

local sequence = 0 -- per worker
local instances = {} -- plugin name -> instance id, per worker
local methods -- PDK name -> { input = type, output = type }

local len_box = ffi.new("uint32_t[1]")

local function len_prefix(n)
    len_box[0] = n
    return ffi.string(len_box, 4)
end

local function read_frame(sock)
    local head, err = sock:receive(4)
    if not head then
        return nil, err
    end
    local n = ffi.cast("const uint32_t *", head)[0]
    if n == 0 then
        return ""
    end
    return sock:receive(n)
end

local function send_frame(sock, payload)
    local _, err = sock:send(len_prefix(#payload))
    if err then
        return err
    end
    _, err = sock:send(payload)
    return err
end

-- The PDK name of a service method, as Kong derives it.
local function pdk_name(service, method)
    local options = method.options
    if options and options.MethodName then
        return options.MethodName
    end
    local dotted = (service .. "." .. method.name):gsub("_", ".")
    return (dotted:gsub("([a-z]%d*)([A-Z])", "%1_%2"):lower())
end

-- Google's well-known messages the schema imports, as much of them as the
-- wire uses (field numbers as Google's): lua-protobuf's parser reads the
-- proto2/proto3 text only, not the editions syntax of today's descriptor.proto.
local WELL_KNOWN = {
    ["google/protobuf/descriptor.proto"] = [[
        syntax = "proto2";
        package google.protobuf;
        message MethodOptions { extensions 1000 to max; }
    ]],
    ["google/protobuf/empty.proto"] = [[
        syntax = "proto3";
        package google.protobuf;
        message Empty {}
    ]],
    ["google/protobuf/struct.proto"] = [[
        syntax = "proto3";
        package google.protobuf;
        message Struct { map<string, Value> fields = 1; }
        message Value {
            oneof kind {
                NullValue null_value = 1;
                double number_value = 2;
                string string_value = 3;
                bool bool_value = 4;
                Struct struct_value = 5;
                ListValue list_value = 6;
            }
        }
        enum NullValue { NULL_VALUE = 0; }
        message ListValue { repeated Value values = 1; }
    ]],
}

local function load_schema(proto_dir)
    local p = protoc.new()
    p:addpath(proto_dir)
    p.unknown_import = function(self, name)
        local text = WELL_KNOWN[name]
        return text and self:parse(text, name)
    end
    p.include_imports = true
    p:loadfile("pluginsocket.proto")
    local parsed = p:parsefile("pluginsocket.proto")
    methods = {}
    for _, service in ipairs(parsed.service) do
        for _, m in ipairs(service.method) do
            methods[pdk_name(service.name, m)] = { input = m.input_type, output = m.output_type }
        end
    end
end

-- google.protobuf.Value / Struct / ListValue to and from Lua values.
local to_value, to_struct
function to_value(v)
    local t = type(v)
    if t == "string" then
        return { string_value = v }
    elseif t == "number" then
        return { number_value = v }
    elseif t == "boolean" then
        return { bool_value = v }
    elseif t == "table" then
        if v[1] ~= nil then
            local values = {}
            for i, item in ipairs(v) do
                values[i] = to_value(item)
            end
            return { list_value = { values = values } }
        end
        return { struct_value = to_struct(v) }
    end
    return { null_value = 0 }
end

function to_struct(t)
    local fields = {}
    for k, v in pairs(t) do
        fields[k] = to_value(v)
    end
    return { fields = fields }
end

local function from_value(v)
    if type(v) ~= "table" then
        return v
    end
    if v.list_value then
        local out = {}
        for i, item in ipairs(v.list_value.values or {}) do
            out[i] = from_value(item)
        end
        return out
    end
    if v.struct_value then
        local out = {}
        for k, item in pairs(v.struct_value.fields or {}) do
            out[k] = from_value(item)
        end
        return out
    end
    if v.bool_value ~= nil then
        return v.bool_value
    end
    return v.string_value or v.number_value
end

local function header_var(name)
    return ngx.var["http_" .. name:lower():gsub("-", "_")]
end

local exit_args -- set by kong.response.exit during the event

-- The PDK functions the benchmark plugins call, done for real on the live
-- request: each takes its decoded input message and returns the Lua value.
local pdk = {
    ["kong.request.get_header"] = function(a) return header_var(a.v) end,
    ["kong.request.get_headers"] = function(a) return ngx.req.get_headers(a.v) end,
    ["kong.request.get_query"] = function(a) return ngx.req.get_uri_args(a.v) end,
    ["kong.request.get_path"] = function() return ngx.var.uri end,
    ["kong.request.get_method"] = function() return ngx.req.get_method() end,
    ["kong.request.get_scheme"] = function() return ngx.var.scheme end,
    ["kong.request.get_host"] = function() return ngx.var.host end,
    ["kong.client.get_ip"] = function() return ngx.var.remote_addr end,
    ["kong.log.debug"] = function(a)
        local parts = {}
        for i, v in ipairs(a.values or {}) do
            parts[i] = tostring(from_value(v))
        end
        ngx.log(ngx.DEBUG, table.concat(parts, " "))
    end,
    ["kong.ctx.shared.set"] = function(a) ngx.ctx[a.k] = from_value(a.v) end,
    ["kong.ctx.shared.get"] = function(a) return ngx.ctx[a.v] end,
    ["kong.service.request.set_header"] = function(a) ngx.req.set_header(a.k, from_value(a.v)) end,
    ["kong.response.set_header"] = function(a) ngx.header[a.k] = from_value(a.v) end,
    ["kong.response.add_header"] = function(a)
        local v = from_value(a.v)
        local old = ngx.header[a.k]
        if old == nil then
            ngx.header[a.k] = v
        elseif type(old) == "table" then
            old[#old + 1] = v
            ngx.header[a.k] = old
        else
            ngx.header[a.k] = { old, v }
        end
    end,
    ["kong.response.exit"] = function(a)
        exit_args = { status = a.status, body = a.body, headers = from_value({ struct_value = a.headers }) }
    end,
}

-- A result as its output message.
local function wrap(output, value)
    if value == nil then
        return ""
    end
    local msg
    if output == ".google.protobuf.Struct" then
        msg = to_struct(value)
    elseif output == ".google.protobuf.Value" then
        msg = to_value(value)
    else
        msg = { v = value }
    end
    return pb.encode(output, msg)
end

-- One RPC on a pooled connection; the decoded RpcReturn, or nil and an error.
local function call(socket_path, command, body, bridge)
    local sock = ngx.socket.tcp()
    local ok, err = sock:connect(socket_path)
    if not ok then
        return nil, "connect: " .. tostring(err)
    end
    sequence = sequence + 1
    local seq = sequence
    err = send_frame(sock, pb.encode(".kong_plugin_protocol.RpcCall", { sequence = seq, [command] = body }))
    if err then
        sock:close()
        return nil, "send: " .. err
    end
    while bridge do
        local name
        name, err = read_frame(sock)
        if not name then
            sock:close()
            return nil, "closed: " .. tostring(err)
        end
        if name == "" then
            break
        end
        local args
        args, err = read_frame(sock)
        if not args then
            sock:close()
            return nil, "closed: " .. tostring(err)
        end
        local m, fn = methods[name], pdk[name]
        if not m or not fn then
            sock:close()
            return nil, "method not found: " .. name
        end
        err = send_frame(sock, wrap(m.output, fn(pb.decode(m.input, args))))
        if err then
            sock:close()
            return nil, "send: " .. err
        end
    end
    local frame
    frame, err = read_frame(sock)
    if not frame then
        sock:close()
        return nil, "closed: " .. tostring(err)
    end
    sock:setkeepalive()
    local ret = pb.decode(".kong_plugin_protocol.RpcReturn", frame)
    if ret.sequence ~= seq then
        return nil, "sequence mismatch"
    end
    return ret
end

local function instance_id(plugin, socket_path, config)
    local id = instances[plugin]
    if id then
        return id
    end
    local ret, err = call(socket_path, "cmd_start_instance", { name = plugin, config = config })
    if not ret then
        return nil, err
    end
    id = ret.instance_status and ret.instance_status.instance_id
    instances[plugin] = id
    return id, id == nil and "StartInstance failed" or nil
end

-- Runs one phase of `plugin` for the current request over ProtoBuf:1.
function _M.run(plugin, phase, socket_path, config, proto_dir)
    if not methods then
        load_schema(proto_dir)
    end
    socket_path = "unix:" .. socket_path
    exit_args = nil
    local ret, err
    for _ = 1, 2 do
        local id
        id, err = instance_id(plugin, socket_path, config)
        if not id then
            break
        end
        ret, err = call(socket_path, "cmd_handle_event", { instance_id = id, event_name = phase }, true)
        if ret or not tostring(err):find("closed", 1, true) then
            break
        end
        instances[plugin] = nil
    end
    if not ret then
        ngx.log(ngx.ERR, "plugin server: ", tostring(err))
        return ngx.exit(500)
    end
    if exit_args then
        ngx.status = exit_args.status
        for k, v in pairs(exit_args.headers or {}) do
            ngx.header[k] = v
        end
        ngx.print(exit_args.body)
        return ngx.exit(exit_args.status)
    end
end

return _M
