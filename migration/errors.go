package migration

import "errors"

// Sentinels for the conditions callers (the CLI) branch on.
var (
	// ErrForbidden: the credentials lack a permission the operation needs.
	ErrForbidden = errors.New("permission denied")
	// ErrNamespaceNotFound: the namespace does not exist.
	ErrNamespaceNotFound = errors.New("namespace not found")
	// ErrAlreadyMigrated: the namespace is already on nodemesh.
	ErrAlreadyMigrated = errors.New("namespace already migrated")
	// ErrNotInstalled: nodemesh is not installed in the cluster.
	ErrNotInstalled = errors.New("nodemesh is not installed")
	// ErrBlocked: analysis found something that does not work after the move.
	ErrBlocked = errors.New("migration blocked by analysis")
	// ErrNoBackup: there is no migration to roll back.
	ErrNoBackup = errors.New("no migration to roll back")
	// ErrRolledBack: apply failed and rolled the namespace back.
	ErrRolledBack = errors.New("migration failed and was rolled back")
)
