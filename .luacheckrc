-- luacheck configuration: lua/ is the module, tests/ are busted specs.
std = "lua54"
max_line_length = 120
-- a definition that fails to parse on purpose
exclude_files = { "tests/bad/24-syntax-error.lua" }

files["tests/"] = { std = "+busted" }
-- bad definitions: plain Lua, and a first line that holds the expected message
files["tests/bad/"] = { std = "lua54", max_line_length = false }
