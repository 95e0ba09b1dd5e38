CREATE TABLE schema_migrations (
	version INTEGER NOT NULL, 
	applied_at DATETIME NOT NULL, 
	PRIMARY KEY (version)
);
CREATE TABLE calls (
	id INTEGER NOT NULL, 
	call_id VARCHAR(255) NOT NULL, 
	agent_id VARCHAR(255), 
	phrasebook VARCHAR(255) NOT NULL, 
	phrasebook_version VARCHAR(64), 
	audio TEXT NOT NULL, 
	duration_s FLOAT, 
	score INTEGER, 
	score_max INTEGER, 
	started_at DATETIME, 
	scored_at DATETIME NOT NULL, 
	report JSON NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (call_id)
);
CREATE INDEX ix_calls_agent_id ON calls (agent_id);
CREATE TABLE alerts (
	id INTEGER NOT NULL, 
	call_id VARCHAR(255) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	phrase_id VARCHAR(255) NOT NULL, 
	canonical TEXT NOT NULL, 
	heard TEXT NOT NULL, 
	start FLOAT, 
	"end" FLOAT, 
	article VARCHAR(64), 
	latency_s FLOAT, 
	created_at DATETIME NOT NULL, 
	acknowledged_at DATETIME, 
	acknowledged_by VARCHAR(255), 
	agent_id VARCHAR(255), 
	severity VARCHAR(16), 
	PRIMARY KEY (id)
);
CREATE INDEX ix_alerts_call_id ON alerts (call_id);
CREATE INDEX ix_alerts_agent_id ON alerts (agent_id);
CREATE TABLE users (
	id INTEGER NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	agent_id VARCHAR(255), 
	password_hash TEXT, 
	api_token_hash TEXT, 
	created_at DATETIME NOT NULL, 
	disabled_at DATETIME, 
	PRIMARY KEY (id), 
	CONSTRAINT users_role CHECK (role IN ('supervisor', 'agent')), 
	UNIQUE (name)
);
CREATE TABLE segments (
	id INTEGER NOT NULL, 
	call_id VARCHAR(255) NOT NULL, 
	position INTEGER NOT NULL, 
	start FLOAT NOT NULL, 
	"end" FLOAT NOT NULL, 
	speaker VARCHAR(16) NOT NULL, 
	text TEXT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(call_id) REFERENCES calls (call_id) ON DELETE CASCADE
);
CREATE INDEX ix_segments_call_id ON segments (call_id);
CREATE TABLE events (
	id INTEGER NOT NULL, 
	call_id VARCHAR(255) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	phrase_id VARCHAR(255) NOT NULL, 
	canonical TEXT NOT NULL, 
	heard TEXT NOT NULL, 
	start FLOAT, 
	"end" FLOAT, 
	article VARCHAR(64), 
	speaker VARCHAR(16), 
	confidence FLOAT, 
	severity VARCHAR(16), 
	PRIMARY KEY (id), 
	FOREIGN KEY(call_id) REFERENCES calls (call_id) ON DELETE CASCADE
);
CREATE INDEX ix_events_call_id ON events (call_id);
CREATE TABLE checks (
	id INTEGER NOT NULL, 
	call_id VARCHAR(255) NOT NULL, 
	check_id VARCHAR(255) NOT NULL, 
	passed BOOLEAN NOT NULL, 
	detail TEXT, 
	article VARCHAR(64), 
	PRIMARY KEY (id), 
	FOREIGN KEY(call_id) REFERENCES calls (call_id) ON DELETE CASCADE
);
CREATE INDEX ix_checks_call_id ON checks (call_id);
CREATE TABLE deductions (
	id INTEGER NOT NULL, 
	call_id VARCHAR(255) NOT NULL, 
	reason TEXT NOT NULL, 
	points INTEGER NOT NULL, 
	source VARCHAR(255), 
	severity VARCHAR(16), 
	article VARCHAR(64), 
	PRIMARY KEY (id), 
	FOREIGN KEY(call_id) REFERENCES calls (call_id) ON DELETE CASCADE
);
CREATE INDEX ix_deductions_call_id ON deductions (call_id);
CREATE TABLE sessions (
	id INTEGER NOT NULL, 
	token_hash VARCHAR(64) NOT NULL, 
	user_id INTEGER NOT NULL, 
	csrf_token VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	expires_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (token_hash), 
	FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX ix_sessions_user_id ON sessions (user_id);
