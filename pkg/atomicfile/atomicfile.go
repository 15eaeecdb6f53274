// Package atomicfile replaces files so that a reader (or an exec) sees the
// old content or the new one, never a torn file: write a temporary file in
// the target's directory, sync it, set its mode, rename it over the target,
// sync the directory. A failure removes the temporary file.
package atomicfile

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
)

// TempPrefix starts the name of every temporary file, so a caller can find
// those a killed process left behind.
func TempPrefix(target string) string { return "." + filepath.Base(target) + ".tmp-" }

// WriteFile replaces path with data.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return Write(path, bytes.NewReader(data), perm)
}

// Write replaces path with what r yields.
func Write(path string, r io.Reader, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, TempPrefix(path)+"*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = io.Copy(f, r); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	// The rename is durable once the directory is synced.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
