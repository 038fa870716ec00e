-- The application user of docker/userlist.txt (password "secret").
CREATE ROLE app LOGIN PASSWORD 'secret';
GRANT ALL ON DATABASE appdb TO app;
GRANT ALL ON SCHEMA public TO app;
