-- Headless Ardour 7 driver for tests/tests/ardour.rs (run by `ardour7-lua`, the session
-- scripting interpreter, with Ardour's own "None (Dummy)" audio backend: no JACK, no sound
-- card). Arguments come in the environment, since ardour-lua passes none to the script:
--   EZ_MODE=create  EZ_DIR, EZ_NAME: a new 48 kHz session with one MIDI track holding the
--                   EzAudio VST3 (strict I/O off, so all 34 plugin outputs stay configured),
--                   saved and closed.
--   EZ_MODE=render  EZ_DIR, EZ_NAME, EZ_OUT, EZ_FRAMES: loads the session, exports the master
--                   bus over [0, EZ_FRAMES) into the folder EZ_OUT (freewheeling, offline),
--                   saves the session again (state round trip) and closes it.
-- Everything it finds is printed as "EZ key value" lines for the Rust side to check.

local function env (k)
	local v = os.getenv (k)
	assert (v and v ~= "", "missing environment variable " .. k)
	return v
end

local mode, dir, name = env ("EZ_MODE"), env ("EZ_DIR"), env ("EZ_NAME")

AudioEngine:set_backend ("None (Dummy)", "", "")
AudioEngine:set_sample_rate (48000)
AudioEngine:set_buffer_size (1024)
assert (AudioEngine:start (false) == 0, "the dummy audio engine did not start")

local function plugin_insert (s)
	for r in s:get_routes ():iter () do
		local p = r:nth_plugin (0)
		if not p:isnil () and p:display_name () == "EzAudio" then
			return r, p:to_insert ()
		end
	end
	error ("no EzAudio plugin in the session")
end

if mode == "create" then
	local s = create_session (dir, name, 48000)
	assert (s, "could not create the session")
	local pi = ARDOUR.LuaAPI.new_plugin_info ("EzAudio", ARDOUR.PluginType.VST3)
	assert (not pi:isnil (), "EzAudio VST3 not found (was the plugin cache made?)")
	local tl = s:new_midi_track (ARDOUR.ChanCount (ARDOUR.DataType ("midi"), 1),
		ARDOUR.ChanCount (ARDOUR.DataType ("audio"), 2), false, pi, nil, nil, 1, "EzAudio",
		ARDOUR.PresentationInfo.max_order, ARDOUR.TrackMode.Normal, true, false)
	assert (tl:size () == 1, "no track")
	local route, ins = plugin_insert (s)
	-- Ardour connects a new track's outputs to the master bus asynchronously; a session saved
	-- before that has an unconnected track (and exports silence on every load).
	local out = route:output ()
	local function connected ()
		local n = out:n_ports ():n_audio ()
		return n > 0 and out:audio (0):connected () and out:audio (n - 1):connected ()
	end
	for _ = 1, 100 do
		if connected () then break end
		ARDOUR.LuaAPI.usleep (50000)
	end
	print ("EZ connected", connected ())
	print ("EZ plugin_outputs", ins:output_streams ():n_audio ())
	print ("EZ plugin_inputs", ins:input_streams ():n_audio ())
	s:save_state ("", false, false, false, false, false)
	close_session ()
elseif mode == "render" then
	local s = load_session (dir, name)
	assert (s, "could not load the session")
	local route, ins = plugin_insert (s)
	print ("EZ plugin_outputs", ins:output_streams ():n_audio ())
	print ("EZ route_outputs", route:n_outputs ():n_audio ())
	-- No wait here: Ardour restores the plugin state after activating it, and the plugin
	-- publishes the restored clips and lock positions before the state call returns, so a
	-- freewheeling export started at once must still find them.
	local frames = tonumber (env ("EZ_FRAMES"))
	local e = s:simple_export ()
	e:set_folder (env ("EZ_OUT"))
	e:set_name ("ezaudio-bounce")
	e:set_range (0, frames)
	-- The float preset (tests/hosts/ardour-export), when installed in the config folder.
	print ("EZ preset", e:set_preset (os.getenv ("EZ_PRESET") or ""))
	print ("EZ outputs_ok", e:check_outputs ())
	print ("EZ exported", e:run_export ())
	s:save_state ("", false, false, false, false, false)
	close_session ()
else
	error ("EZ_MODE must be create or render")
end
print ("EZ done 1")
