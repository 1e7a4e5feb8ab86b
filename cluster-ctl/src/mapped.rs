//! Array maps created with `BPF_F_MMAPABLE`, mapped into the controller: whole tables are
//! written with plain stores instead of one system call per element.

use std::{io, marker::PhantomData, os::fd::BorrowedFd, ptr::NonNull};

/// A shared mapping of an array map of `len` elements of `T`. Only this handle writes to it; the
/// XDP program reads it concurrently.
pub struct MappedArray<T> {
    base: NonNull<u8>,
    len: usize,
    _element: PhantomData<T>,
}

// SAFETY: plain shared memory owned by this handle.
unsafe impl<T: Send> Send for MappedArray<T> {}

impl<T> MappedArray<T> {
    /// The kernel places array elements 8-byte aligned.
    const STRIDE: usize = size_of::<T>().next_multiple_of(8);

    fn bytes(len: usize) -> usize {
        len * Self::STRIDE
    }
}

impl<T: Copy> MappedArray<T> {
    /// Maps the map behind `fd`, which must be an mmapable array of at least `len` elements of
    /// `T`; the mapping keeps the map alive by itself.
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a fresh shared mapping of the map's value area, checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::bytes(len),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: NonNull::new(base.cast()).ok_or_else(io::Error::last_os_error)?,
            len,
            _element: PhantomData,
        })
    }

    /// A copy of the whole mapping's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = Self::bytes(self.len);
        let mut copy = vec![0; len];
        // SAFETY: the mapping is `len` bytes long; the copy is a fresh buffer.
        unsafe { std::ptr::copy_nonoverlapping(self.base.as_ptr(), copy.as_mut_ptr(), len) };
        copy
    }

    /// Element `index`, for stores to single fields (the program may own the others).
    pub fn element(&self, index: usize) -> *mut T {
        assert!(index < self.len, "element {index} of {}", self.len);
        // SAFETY: in bounds of the mapping.
        unsafe { self.base.as_ptr().add(index * Self::STRIDE).cast() }
    }

    /// Element `index`.
    pub fn get(&self, index: usize) -> T {
        // SAFETY: in bounds and aligned; volatile, as the kernel shares the memory.
        unsafe { std::ptr::read_volatile(self.element(index)) }
    }

    /// Writes element `index` with one store per element (the program sees the old or the new
    /// value of an element up to 8 bytes, never a mix).
    pub fn set(&mut self, index: usize, value: T) {
        // SAFETY: as in `get`.
        unsafe { std::ptr::write_volatile(self.element(index), value) };
    }

    /// Elements `start..start + len` as a mutable slice; the caller fences before publishing
    /// them.
    pub fn slice_mut(&mut self, start: usize, len: usize) -> &mut [T] {
        assert_eq!(Self::STRIDE, size_of::<T>(), "elements without gaps");
        assert!(start + len <= self.len, "in bounds");
        // SAFETY: in bounds; only this handle writes, through this borrow.
        unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(start * Self::STRIDE).cast(), len)
        }
    }

    /// Elements `start..start + len` as a slice.
    pub fn slice(&self, start: usize, len: usize) -> &[T] {
        assert_eq!(Self::STRIDE, size_of::<T>(), "elements without gaps");
        assert!(start + len <= self.len, "in bounds");
        // SAFETY: in bounds; only this handle writes, and not while the slice is borrowed.
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(start * Self::STRIDE).cast(), len)
        }
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), Self::bytes(self.len)) };
    }
}
