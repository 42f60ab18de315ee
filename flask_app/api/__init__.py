"""HTTP edges for people and programs: /api, /admin, their auth, schemas and errors."""
