-- The command line's sandbox options: vmlua --sandbox [--allow DIR]...
-- [--cpu-limit S] [--memory-limit SIZE] FILE, and the same after vmlua plan.
local cli = {}

local TAKES_VALUE = { ["--allow"] = "allow", ["--cpu-limit"] = "cpu", ["--memory-limit"] = "memory" }

-- True for an option of the sandbox.
function cli.takes(a)
  return a == "--sandbox" or TAKES_VALUE[a] ~= nil
end

-- Reads the sandbox option at argv[i] into opts.sandbox (a table of
-- sandbox.load options); returns the index after it, or nil and why.
function cli.option(opts, argv, i)
  local a = argv[i]
  opts.sandbox = opts.sandbox or { allow = {} }
  opts.sandbox.given = opts.sandbox.given or a == "--sandbox"
  if a == "--sandbox" then return i + 1 end
  local value = argv[i + 1]
  if not value then return nil, "'" .. a .. "' needs an argument" end
  local key = TAKES_VALUE[a]
  if key == "allow" then
    table.insert(opts.sandbox.allow, value)
  elseif key == "cpu" then
    opts.sandbox.cpu = tonumber(value)
    if not opts.sandbox.cpu then return nil, "--cpu-limit: expected seconds, got " .. value end
  else
    opts.sandbox.memory = value
  end
  return i + 2
end

-- Why the options cannot be used together, or nil.
function cli.problem(opts)
  local s = opts.sandbox
  if not s then return nil end
  if not s.given then return "--allow, --cpu-limit and --memory-limit go with --sandbox" end
  if not opts.script or opts.script == "-" then return "--sandbox needs a FILE (not standard input)" end
  if opts.interactive or (opts.actions and #opts.actions > 0) then
    return "--sandbox runs only FILE: not with -e, -l or -i"
  end
  return nil
end

-- The chunk that runs FILE in the sandbox: called with the arguments, it
-- returns what the file returns (a recipe, which the caller makes).
function cli.chunk(script, s)
  return function(...)
    return require("vmlua.sandbox").load(script, { allow = s.allow, cpu = s.cpu, memory = s.memory,
                                                   args = { ... } })
  end
end

return cli
