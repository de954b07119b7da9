package policy

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// settle is how long the folder must be quiet before a reload: an editor,
// git or a Kubernetes ConfigMap update writes several files in a row, and
// the reload should read them all, not the first alone.
const settle = 300 * time.Millisecond

// Watch reloads the folder whenever anything in it changes, until Close. A
// reload reads the files once and compiles that read; one that fails its
// checks is refused (see Reload), and the next change tries again. With
// bundles there is no folder to watch, and Watch does nothing.
func (e *Engine) Watch() error {
	if e.fromBundles || e.static || !e.watching.CompareAndSwap(false, true) {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		e.watching.Store(false)
		return fmt.Errorf("watching %s: %w", e.dir, err)
	}
	if err := watchTree(w, e.dir); err != nil {
		_ = w.Close()
		e.watching.Store(false)
		return fmt.Errorf("watching %s: %w", e.dir, err)
	}
	go func() {
		defer w.Close()
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		for {
			select {
			case <-e.bg.Done():
				timer.Stop()
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				// A new folder (a package of its own, or the directory a
				// ConfigMap swaps in) is watched too.
				if ev.Has(fsnotify.Create) {
					_ = watchTree(w, ev.Name)
				}
				timer.Reset(settle)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				e.logger.Warn("watching the policy folder", "dir", e.dir, "error", err)
				timer.Reset(settle)
			case <-timer.C:
				// Errors are counted and logged by reload itself.
				_ = e.reload(e.bg, true)
			}
		}
	}()
	return nil
}

// watchTree watches root and every folder below it; root may be a file.
func watchTree(w *fsnotify.Watcher, root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// A symbolic link to a folder (a ConfigMap's ..data) is a folder
		// the loader reads: watch it.
		if d.IsDir() || d.Type()&fs.ModeSymlink != 0 {
			return w.Add(path)
		}
		return nil
	})
}
