-- The interactive prompt: `vmlua` with no arguments, and `vmlua -i FILE`.
--
-- The prompt runs on the event loop: libedit edits the line through its
-- callback interface (vmlua.core's editor), so VMs, timers and consoles keep
-- going while it waits. Each complete chunk runs as a task, so waiting calls
-- (vm:start(), vm:expect(), vmlua.sleep()) work, and Ctrl-C ends a wait with
-- the error "interrupted". Output written while the prompt is up (prints
-- from callbacks, state events, errors) is written above it, and the prompt
-- and the half-typed line are drawn again below it.
local core = require "vmlua.core"
local task = require "vmlua.task"

-- The VM module, which `vmlua -e` and the prompt load only when used.
local function machine()
  return require "vmlua.machine"
end

local repl = {
  depth = 3,            -- how deep tables are printed
  items = 100,          -- how many fields of a table are printed
  width = 78,           -- a table longer than this is printed one field a line
  history_size = 1000,
}

local current -- the session that runs, for repl.suspend()

------------------------------------------------------------------------
-- Printing values

local KEYWORDS = {}
for word in ([[and break do else elseif end false for function goto if in
  local nil not or repeat return then true until while]]):gmatch("%a+") do
  KEYWORDS[word] = true
end

local function is_name(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil and not KEYWORDS[s]
end

local function quote(s)
  return (string.format("%q", s):gsub("\\\n", "\\n"))
end

local function has_tostring(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__tostring") ~= nil
end

local function scalar(v)
  if type(v) == "string" then return quote(v) end
  local ok, s = pcall(tostring, v)
  return ok and tostring(s) or "<" .. type(v) .. ">"
end

local KEY_ORDER = { number = 1, string = 2 }

local function key_less(a, b)
  local ta, tb = KEY_ORDER[type(a)] or 3, KEY_ORDER[type(b)] or 3
  if ta ~= tb then return ta < tb end
  if ta == 3 then return scalar(a) < scalar(b) end
  return a < b
end

local function render(v, depth, seen, indent)
  if type(v) ~= "table" or has_tostring(v) then return scalar(v) end
  if seen[v] then return "<cycle>" end
  if depth <= 0 then return next(v) == nil and "{}" or "{...}" end
  seen[v] = true
  local inner = indent .. "  "
  local items, count = {}, 0
  local n = rawlen(v)
  local function add(text)
    count = count + 1
    if count <= repl.items then items[#items + 1] = text end
  end
  for i = 1, n do add(render(rawget(v, i), depth - 1, seen, inner)) end
  local keys = {}
  for k in next, v do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_less)
  for _, k in ipairs(keys) do
    local name = is_name(k) and k or "[" .. scalar(k) .. "]"
    add(name .. " = " .. render(rawget(v, k), depth - 1, seen, inner))
  end
  if count > repl.items then items[#items + 1] = "... (" .. (count - repl.items) .. " more)" end
  seen[v] = nil
  if #items == 0 then return "{}" end
  local line = "{ " .. table.concat(items, ", ") .. " }"
  if #indent + #line <= repl.width and not line:find("\n", 1, true) then return line end
  return "{\n" .. inner .. table.concat(items, ",\n" .. inner) .. "\n" .. indent .. "}"
end

-- How the prompt shows a value: a string as it is (like lua.c), or quoted
-- when it is one of several values; tables readably to repl.depth levels;
-- anything with __tostring (a VM) through it.
-- A string with control bytes (console output, say) is quoted too, so that
-- its escape sequences show rather than reach the terminal.
function repl.format(v, quoted)
  if type(v) == "string" and not quoted and not v:find("[\0-\8\11-\31\127]") then return v end
  return render(v, repl.depth, {}, "")
end

------------------------------------------------------------------------
-- Completion

-- The fields of v that completion offers: its own, and those its
-- metatable's __index tables provide (a VM's methods, a string's library).
local function fields(v)
  local out, seen = {}, {}
  local function add(t)
    for k, value in next, t do
      if type(k) == "string" and not seen[k] then
        seen[k] = true
        out[#out + 1] = { k, value }
      end
    end
  end
  for _ = 1, 8 do
    if type(v) == "table" then add(v) end
    local mt = getmetatable(v)
    local lazy = type(mt) == "table" and rawget(mt, "__lazy") -- fields loaded on first use (vmlua's)
    if type(lazy) == "table" then
      local t = v
      for _, k in ipairs(lazy) do
        local ok, value = pcall(function() return t[k] end)
        if ok then add({ [k] = value }) end
      end
    end
    if type(mt) ~= "table" or type(rawget(mt, "__index")) ~= "table" then break end
    v = rawget(mt, "__index")
  end
  return out
end

-- A VM offers its public fields (machine.FIELDS) and methods, never its
-- internals (handlers, process, run_queue, ...); `_` methods only when
-- the prefix asks for them.
local function vm_fields(vm)
  local out = {}
  for _, name in ipairs(machine().FIELDS) do out[#out + 1] = { name, vm[name] } end
  for name, value in pairs(machine().class()) do
    if type(value) == "function" and not name:find("^__") then out[#out + 1] = { name, value } end
  end
  return out
end

local function lookup(env, path)
  local v = env
  for name in path:gmatch("[^.]+") do
    if not is_name(name) then return nil end
    local ok, value = pcall(function() return v[name] end)
    if not ok or value == nil then return nil end
    v = value
  end
  return v
end

-- The names of running VMs that start with `prefix`, for vmlua.attach(".
function repl.instance_names(prefix)
  local out = {}
  for _, status in ipairs(require("vmlua.instance.store").list()) do
    if status.name:sub(1, #prefix) == prefix and not ({ stopped = true, error = true })[status.state] then
      out[#out + 1] = status.name
    end
  end
  return out
end

-- Candidates for `word` (the text before the cursor back to a space or an
-- operator), given the text before it: globals and locals, fields after
-- `.`, methods after `:`; functions get their `(`.
function repl.complete(env, word, before)
  local _, quotes = (before or ""):gsub("[\"']", "")
  local typed = ((before or "") .. word):match("attach%s*%(?%s*[\"']([%w._-]*)$")
  if typed then -- vmlua.attach("de<Tab>: the word may start after a '-' of the name
    local out = {}
    for i, name in ipairs(repl.instance_names(typed)) do out[i] = name:sub(#typed - #word + 1) end
    return out
  end
  if quotes % 2 == 1 or (before or ""):find("%-%-") then return {} end -- in a string or comment
  local path, sep, prefix = word:match("^(.-)([.:])([%w_]*)$")
  local candidates
  if path then
    if path == "" or not path:match("^[%a_][%w_.]*$") or path:find("%.%.") then return {} end
    local v = lookup(env, path)
    if v == nil then return {} end
    local m = package.loaded["vmlua.machine"] -- a VM exists only once it is loaded
    candidates = m and getmetatable(v) == m.VM and vm_fields(v) or fields(v)
  else
    prefix = word
    if not word:match("^[%a_]?[%w_]*$") then return {} end
    candidates = fields(env)
    for k in pairs(KEYWORDS) do candidates[#candidates + 1] = { k, KEYWORDS } end
  end
  local out, seen = {}, {}
  local private = prefix:sub(1, 1) == "_"
  for _, c in ipairs(candidates) do
    local name, value = c[1], c[2]
    local callable = type(value) == "function"
      or (type(getmetatable(value)) == "table" and rawget(getmetatable(value), "__call") ~= nil)
    if is_name(name) or (not path and KEYWORDS[name]) then
      if name:sub(1, #prefix) == prefix and (private or name:sub(1, 1) ~= "_")
         and (sep ~= ":" or callable) then
        local text = (path and path .. sep or "") .. name .. (callable and "(" or "")
        if not seen[text] then
          seen[text] = true
          out[#out + 1] = text
        end
      end
    end
  end
  table.sort(out)
  return out
end

------------------------------------------------------------------------
-- Reading chunks

-- Compiles what was typed: as an expression (its values are printed) or as
-- statements. Returns the chunk, or nil and the error; incomplete is true
-- when more lines could complete it (an error at <eof>, as lua.c decides).
function repl.compile(source, env)
  local chunk = load("return " .. source, "=stdin", "t", env)
  if chunk then return chunk end
  local expr_err = select(2, load("return " .. source, "=stdin", "t", env))
  local stat, err = load(source, "=stdin", "t", env)
  if stat then return stat end
  local incomplete = err:find("<eof>$") ~= nil or expr_err:find("<eof>$") ~= nil
  return nil, err, incomplete
end

-- Runs chunk(...) as the main chunk of a file while keeping the values of
-- its locals when it returns (a return hook on the running coroutine), so
-- that `vmlua -i FILE` can offer them at the prompt. Returns that table.
function repl.capture(chunk, ...)
  local vars = {}
  debug.sethook(function()
    local info = debug.getinfo(2, "f")
    if info and info.func == chunk then
      for i = 1, math.huge do
        local name, value = debug.getlocal(2, i)
        if not name then break end
        if not name:find("^%(") then vars[name] = value end
      end
    end
  end, "r")
  chunk(...)
  debug.sethook()
  return vars
end

local function history_path()
  local state = os.getenv("XDG_STATE_HOME")
  if not state or state:sub(1, 1) ~= "/" then
    local home = os.getenv("HOME")
    if not home or home == "" then return nil end
    state = home .. "/.local/state"
  end
  -- Parents are created only when missing (0700, as XDG asks); vmlua's own
  -- directory is made private.
  local dir = ""
  for part in state:gmatch("[^/]+") do
    dir = dir .. "/" .. part
    if not core.stat(dir) then
      local ok, err = core.mkdir_private(dir)
      if not ok then return nil, err end
    end
  end
  local ok, err = core.mkdir_private(state .. "/vmlua")
  if not ok then return nil, err end
  return state .. "/vmlua/history"
end

------------------------------------------------------------------------
-- The session

local EXIT = setmetatable({}, { __tostring = function() return "exit" end })

-- An error as the prompt shows it: printable (it may carry console lines).
local function error_text(e)
  if type(e) == "string" then return require("vmlua.console").printable(e) end
  if has_tostring(e) then return require("vmlua.console").printable(tostring(e)) end
  return "(error object is a " .. type(e) .. " value)"
end

-- Whether what a write call prints ends its line.
local function ends_line(...)
  for i = select("#", ...), 1, -1 do
    local s = select(i, ...)
    if s ~= "" then return type(s) == "string" and s:sub(-1) == "\n" end
  end
  return true
end

-- Output from anywhere in Lua goes above the prompt: print, io.write and
-- the write method of io.stdout and io.stderr clear the prompt first.
-- Returns the function that puts the originals back.
local function hook_output(ed)
  local print, write = _G.print, io.write
  local methods = getmetatable(io.stdout).__index
  local file_write = methods.write
  rawset(_G, "print", function(...)
    ed:hide(true)
    return print(...)
  end)
  io.write = function(...) -- luacheck: ignore 122
    ed:hide(ends_line(...))
    return write(...)
  end
  methods.write = function(f, ...)
    if f == io.stdout or f == io.stderr then ed:hide(ends_line(...)) end
    return file_write(f, ...)
  end
  return function()
    rawset(_G, "print", print)
    io.write = write -- luacheck: ignore 122
    methods.write = file_write
  end
end

local function say(...)
  io.stderr:write("vmlua: ", ...)
  io.stderr:write("\n")
end

-- Stops the VMs still running, gracefully, and says so.
local function stop_vms(session)
  if not package.loaded["vmlua.machine"] then return end -- no VM was ever defined
  local live = machine().live
  local vms = {}
  for vm in pairs(live) do vms[#vms + 1] = vm end
  if #vms == 0 then return end
  table.sort(vms, function(a, b) return a.name < b.name end)
  local outcome = {}
  for _, vm in ipairs(vms) do
    say("stopping ", tostring(vm), " (Ctrl-C forces it off)")
    task.spawn(function()
      local ok, how = pcall(machine().stop, vm, session.force)
      outcome[vm] = ok and ("vm " .. vm.name .. (how == "forced" and " forced off" or " stopped"))
        or error_text(how)
    end)
  end
  while next(live) do core.run("once") end
  core.run("nowait") -- the state events of the last stop
  for _, vm in ipairs(vms) do say(outcome[vm] or ("vm " .. vm.name .. " " .. vm.state)) end
end

local Session = {}
Session.__index = Session

-- The prompts are "> " and ">> ", or the globals _PROMPT and _PROMPT2 (as in lua.c).
function Session:prompt()
  if self.quitting or self.running then return end
  local prompt = self.pending and (rawget(_G, "_PROMPT2") or ">> ") or (rawget(_G, "_PROMPT") or "> ")
  self.ed:prompt(tostring(prompt))
end

function Session:quit(code)
  if self.quitting then return end
  self.quitting, self.exit_code = true, code
  if self.ed:reading() then self.ed:stop() end
  core.stop()
end

function Session:remember(line)
  if not self.ed:tty() or line:match("^%s*$") or line == self.last_line then return end
  self.last_line = line
  self.ed:history_add(line)
  if self.history then
    local ok, err = self.ed:history_save(self.history, repl.history_size)
    if not ok and not self.history_warned then
      self.history_warned = true
      say("history not saved: ", err)
    end
  end
end

local function show(results)
  local out = {}
  for i = 2, results.n do out[#out + 1] = repl.format(results[i], results.n > 2) end
  if #out > 0 then print(table.concat(out, "\t")) end
end

function Session:execute(chunk)
  task.spawn(function()
    local co = coroutine.running()
    self.running = co
    -- pcall, but the code that Ctrl-C interrupts, even when busy
    local results = table.pack(self.interrupt:pcall(chunk))
    if self.running ~= co then return end -- left behind after a Ctrl-C
    self.running = nil
    if results[1] then
      show(results)
    elseif results[2] == "interrupted" then
      io.stderr:write("\ninterrupted\n") -- below the ^C the terminal echoed
    elseif results[2] ~= EXIT then
      self.failed = true
      io.stderr:write(error_text(results[2]), "\n")
    end
    self:prompt()
  end)
end

function Session:on_line(line)
  if line == nil then return self:quit() end
  self:remember(line)
  local source = self.pending and (self.pending .. "\n" .. line) or line
  if source:match("^%s*$") then return self:prompt() end
  local chunk, err, incomplete = repl.compile(source, self.env)
  if not chunk and incomplete then
    self.pending = source
    return self:prompt()
  end
  self.pending = nil
  if not chunk then
    self.failed = true
    io.stderr:write(err, "\n")
    return self:prompt()
  end
  self:execute(chunk)
end

-- Ctrl-C: ends the wait of the line that runs ("interrupted"), or drops
-- the line being typed; while VMs are being stopped at the end, forces them.
function Session:on_interrupt(busy)
  if self.quitting then
    if not self.force then
      self.force = true
      say("forcing the VMs off")
      if package.loaded["vmlua.machine"] then machine().stop_all(true) end
    end
  elseif busy then
    return -- the hook stopped the code that ran
  elseif self.running then
    if not task.interrupt(self.running, "interrupted") then
      -- suspended outside any wait: leave it behind
      self.interrupt:clear()
      self.running = nil
      io.stderr:write("\ninterrupted (the line was left suspended)\n")
      self:prompt()
    end
  elseif self.ed:reading() then
    self.pending = nil
    self.ed:cancel()
    self:prompt()
  end
end

-- Takes the prompt off the terminal for something that needs it while the
-- prompt is up (a console attached by a background task); returns the
-- function that puts it back, or nil when no prompt is up.
function repl.suspend()
  local s = current
  if not s or not s.ed:reading() then return nil end
  s.ed:stop()
  return function() if current == s then s:prompt() end end
end

-- The globals of the prompt and of `vmlua -e`: vmlua (the module), help,
-- and `locals`, over _G (new globals go to _G).
function repl.environment(locals)
  local vars = { vmlua = require "vmlua", help = function(...) return require("vmlua.help").help(...) end }
  for k, v in pairs(locals or {}) do vars[k] = v end
  return setmetatable(vars, { __index = _G, __newindex = _G })
end

-- opts: report(message), version (banner), locals (from repl.capture).
-- Returns false when input that is not a terminal raised an error.
function repl.run(opts)
  if current then error("the prompt is running already", 2) end
  local env = repl.environment(opts.locals)
  local session = setmetatable({ env = env }, Session)
  local restore = {}
  local function cleanup()
    for i = #restore, 1, -1 do pcall(restore[i]) end
    restore = {}
    if current == session then current = nil end
  end
  local guard <close> = setmetatable({}, { __close = cleanup }) -- luacheck: ignore 211

  -- The terminal's mode now is the one to leave it in, whatever happens.
  local term = core.isatty(0) and core.terminal(0)
  if term then restore[#restore + 1] = function() term:close() end end
  session.ed = core.editor {
    name = "vmlua",
    on_line = function(line) session:on_line(line) end,
    complete = function(word, before, out)
      for i, c in ipairs(repl.complete(env, word, before)) do out[i] = c end
    end,
  }
  restore[#restore + 1] = function() session.ed:close() end
  local ed = session.ed
  current = session

  restore[#restore + 1] = hook_output(ed)
  local report = task.report
  task.report = function(message)
    if message ~= EXIT then io.stderr:write(error_text(message), "\n") end
  end
  restore[#restore + 1] = function() task.report = report end
  local exit = os.exit
  -- os.exit leaves the prompt the way Ctrl-D does (VMs stopped, terminal
  -- restored), then exits with the code; in a task it also ends the task.
  os.exit = function(code) -- luacheck: ignore 122
    session:quit(code == nil and true or code)
    if task.current() then error(EXIT, 0) end
  end
  restore[#restore + 1] = function() os.exit = exit end -- luacheck: ignore 122

  session.interrupt = core.interrupt(function(busy) session:on_interrupt(busy) end)
  restore[#restore + 1] = function() session.interrupt:close() end
  local winch = core.signal("WINCH", function() ed:resize() end)
  restore[#restore + 1] = function() winch:close() end

  session.tty = ed:tty()
  if session.tty then
    local path, err = history_path()
    if path then
      session.history = path
      ed:history_load(path)
    else
      say("no history: ", err or "HOME is not set")
    end
    io.stdout:write(opts.version, "; Ctrl-C interrupts, Ctrl-D leaves\n")
  end

  session:prompt()
  core.run()
  if ed:reading() then ed:stop() end
  stop_vms(session)
  cleanup()
  io.stdout:flush()
  if session.exit_code ~= nil then exit(session.exit_code) end
  return not (session.failed and not session.tty)
end

return repl
