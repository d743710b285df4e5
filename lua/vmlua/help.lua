-- help() at the prompt. Its text is the LDoc comments of the installed
-- modules, read when help is asked for: the same source `make doc` builds
-- the API reference from. A doc comment starts with `---`; its name is its
-- @function tag or the code line below it. Functions of init.lua are the
-- module's (vmlua.NAME); functions of `VM` (machine.lua) and of the
-- `methods` tables that other files add to it are the VM's (vm:NAME).
local lfs = require "lfs"

local help = {}

local function strip(line)
  return (line:gsub("^%s*%-%-%-?%s?", ""))
end

-- The summary (first sentence) and the rest of a doc's text.
local function split_text(text)
  local summary, rest = text:match("^(.-[%.%?!])%s+(.*)$")
  if not summary then summary, rest = text, "" end
  return (summary:gsub("%s*\n%s*", " ")), rest
end

local function parse_tag(doc, tag, value)
  local last
  if tag == "tparam" or tag == "param" then
    local opt = value:match("^%[opt[^%]]*%]%s*") ~= nil
    value = value:gsub("^%[[^%]]*%]%s*", "")
    local ty, name, text
    if tag == "tparam" then ty, name, text = value:match("^(%S+)%s+([%w_.]+)%s*(.*)$")
    else name, text = value:match("^([%w_.]+)%s*(.*)$") end
    if name then
      last = { name = name, type = ty, text = text or "", opt = opt }
      if not name:find(".", 1, true) then doc.params[#doc.params + 1] = last end
      doc.all_params[#doc.all_params + 1] = last
    end
  elseif tag == "treturn" or tag == "return" then
    local ty, text
    if tag == "treturn" then ty, text = value:match("^(%S+)%s*(.*)$") else text = value end
    last = { type = ty, text = text or "" }
    doc.returns[#doc.returns + 1] = last
  elseif tag == "field" then
    local name, text = value:match("^([%w_]+)%s*(.*)$")
    if name then
      last = { name = name, text = text }
      doc.fields[#doc.fields + 1] = last
    end
  elseif tag == "function" or tag == "type" or tag == "module" then
    doc[tag] = value:match("^(%S+)")
  end
  return last
end

-- One doc comment: its lines (without the dashes) and the code line after it.
local function parse_block(lines, code)
  local doc = { params = {}, all_params = {}, returns = {}, fields = {} }
  local text, last = {}, nil
  for _, line in ipairs(lines) do
    local tag, value = line:match("^%s*@(%w+)%s*(.*)$")
    if tag then
      last = parse_tag(doc, tag, value)
    elseif last then
      if line:find("%S") then last.text = last.text .. " " .. line:match("^%s*(.-)%s*$") end
    else
      text[#text + 1] = line
    end
  end
  doc.summary, doc.description = split_text((table.concat(text, "\n"):gsub("^%s+", ""):gsub("%s+$", "")))
  local name, args = (code or ""):match("^%s*function%s+([%w_.:]+)%s*%(([^)]*)%)")
  if not name then name, args = (code or ""):match("^%s*([%w_.:]+)%s*=%s*function%s*%(([^)]*)%)") end
  if not name and not (code or ""):match("^%s*local%s") then name = (code or ""):match("^%s*([%w_.]+)%s*=") end
  doc.name = doc["function"] or name
  doc.args = args
  doc.is_function = doc["function"] ~= nil or args ~= nil or #doc.params > 0
  return doc
end

-- The doc comments of a Lua file, in order.
function help.parse(source)
  local docs, lines = {}, {}
  for line in (source .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  local i = 1
  while i <= #lines do
    if lines[i]:match("^%s*%-%-%-%f[^%-]") then
      local block = { strip(lines[i]) }
      i = i + 1
      while lines[i] and lines[i]:match("^%s*%-%-") and not lines[i]:match("^%s*%-%-%-%f[^%-]") do
        block[#block + 1] = strip(lines[i])
        i = i + 1
      end
      local code = lines[i]
      if code and (code:match("^%s*$") or code:match("^%s*%-%-")) then code = nil end
      docs[#docs + 1] = parse_block(block, code)
    else
      i = i + 1
    end
  end
  return docs
end

-- Where the vmlua modules are installed (the directory of vmlua/init.lua).
function help.module_dir()
  local init = package.searchpath("vmlua", package.path)
  return init and init:match("^(.*)/init%.lua$")
end

local function lua_files(dir, out)
  for name in lfs.dir(dir) do
    local path = dir .. "/" .. name
    if name:sub(1, 1) ~= "." then
      local mode = lfs.attributes(path, "mode")
      if mode == "directory" then lua_files(path, out)
      elseif name:match("%.lua$") then out[#out + 1] = path end
    end
  end
  return out
end

local cache

-- The public API's docs: { vmlua = { NAME = doc }, vm = { NAME = doc }, types = { NAME = doc } }.
function help.docs(dir)
  if cache and not dir then return cache end
  local out = { vmlua = {}, vm = {}, types = {} }
  dir = dir or help.module_dir()
  if not dir then return out end
  local files = lua_files(dir, {})
  table.sort(files)
  for _, path in ipairs(files) do
    local f = io.open(path)
    local source = f and f:read("a") or ""
    if f then f:close() end
    local is_init = path == dir .. "/init.lua"
    for _, doc in ipairs(help.parse(source)) do
      local owner, sep, short = (doc.name or ""):match("^([%w_.]-)([.:]?)([%w_]+)$")
      if doc.type then
        out.types[doc.type] = doc
      elseif short and (owner == "VM" or owner == "vm" or owner == "methods") and sep ~= "" then
        out.vm[short] = doc
      elseif short and is_init and (owner == "" or owner == "vmlua") then
        out.vmlua[short] = doc
      end
    end
  end
  if not dir or dir == help.module_dir() then cache = out end
  return out
end

-- How a doc is called: vm:start([opts]), vmlua.size(s), vmlua.version.
function help.signature(doc, prefix, name)
  if not doc.is_function then return prefix .. name end
  local args = {}
  if #doc.params > 0 then
    for _, p in ipairs(doc.params) do
      args[#args + 1] = p.opt and ("[" .. p.name .. "]") or p.name
    end
  elseif doc.args then
    for a in doc.args:gmatch("[^,%s]+") do
      if a ~= "self" then args[#args + 1] = a end
    end
  end
  return prefix .. name .. "(" .. table.concat(args, ", ") .. ")"
end

-- The full text of one doc: signature, text, parameters, results.
function help.describe(doc, prefix, name)
  local out = { help.signature(doc, prefix, name), "  " .. doc.summary }
  if doc.description ~= "" then
    out[#out + 1] = "  " .. doc.description:gsub("\n", "\n  ")
  end
  for _, p in ipairs(doc.all_params) do
    out[#out + 1] = string.format("  %-10s %s%s%s", p.name, p.type and ("(" .. p.type .. ") ") or "",
                                  p.text, p.opt and " (optional)" or "")
  end
  for _, r in ipairs(doc.returns) do
    out[#out + 1] = "  returns " .. (r.type and ("(" .. r.type .. ") ") or "") .. r.text
  end
  for _, f in ipairs(doc.fields) do
    out[#out + 1] = string.format("  %-10s %s", prefix .. f.name, f.text)
  end
  return table.concat(out, "\n")
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- One line a name: signature and summary.
local function listing(docs, prefix, names)
  local out = {}
  for _, name in ipairs(names) do
    local doc = docs[name]
    out[#out + 1] = string.format("  %-28s %s", help.signature(doc, prefix, name), doc.summary)
  end
  return table.concat(out, "\n")
end

-- The public names that have a doc: those of the vmlua table (its lazy
-- fields too), and the public methods of the VM class (no leading `_`).
local function public(docs, t, is_vm)
  local names = {}
  for _, k in ipairs(sorted_keys(docs)) do
    if k:sub(1, 1) ~= "_" and (t == nil or (t[k] ~= nil and (not is_vm or type(t[k]) == "function"))) then
      names[#names + 1] = k
    end
  end
  return names
end

local function overview(docs, VM)
  local vmlua = require "vmlua"
  return table.concat({
    "vmlua: define, boot and drive virtual machines (help(vm) or help \"start\" for one)",
    listing(docs.vmlua, "vmlua.", public(docs.vmlua, vmlua)),
    "A VM (vm = vmlua.vm{...}):",
    listing(docs.vm, "vm:", public(docs.vm, VM, true)),
  }, "\n")
end

local function vm_overview(docs, VM)
  local out = { "A VM: vm = vmlua.vm{...} (help \"start\" for one method)" }
  local class = docs.types.VM
  if class then
    for _, f in ipairs(class.fields) do out[#out + 1] = string.format("  %-28s %s", "vm." .. f.name, f.text) end
  end
  out[#out + 1] = listing(docs.vm, "vm:", public(docs.vm, VM, true))
  return table.concat(out, "\n")
end

-- The text help(what) prints: what is nothing, vmlua, a VM, a function of
-- either, or a name ("start", "vm:start", "vmlua.size", "size").
function help.text(what)
  local docs = help.docs()
  local machine = require "vmlua.machine"
  local VM = machine.class()
  local vmlua = require "vmlua"
  if what == nil or what == vmlua then return overview(docs, VM) end
  if getmetatable(what) == VM then return vm_overview(docs, VM) end
  if type(what) == "function" then
    for name, v in pairs(vmlua) do
      if v == what and docs.vmlua[name] then return help.describe(docs.vmlua[name], "vmlua.", name) end
    end
    for name, v in pairs(VM) do
      if v == what and docs.vm[name] then return help.describe(docs.vm[name], "vm:", name) end
    end
    return "no help for this function: it is not part of vmlua's API"
  end
  if type(what) ~= "string" then return "no help for a " .. type(what) .. " value" end
  if what == "vm" or what == "VM" then return vm_overview(docs, VM) end
  local scope, name = what:match("^(%a+)[.:]([%w_]+)%(?%)?$")
  name = name or what:match("^([%w_]+)%(?%)?$")
  if scope == "vmlua" and docs.vmlua[name] then return help.describe(docs.vmlua[name], "vmlua.", name) end
  if scope ~= "vmlua" and name and docs.vm[name] then return help.describe(docs.vm[name], "vm:", name) end
  if not scope and name and docs.vmlua[name] then return help.describe(docs.vmlua[name], "vmlua.", name) end
  return string.format("no help for %q; help() lists what there is", what)
end

-- The prompt's help: help(), help(vm), help "start", help(vmlua.size).
function help.help(what)
  print(help.text(what))
end

return help
